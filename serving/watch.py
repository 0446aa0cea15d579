"""Merchant monitoring, store side: which platform watches which household, and the events
each platform reads from its change feed (SQLite in WAL mode, shared by every worker and
by ``credref refresh``).

The rules (minimum necessity):

- A platform may watch a household only if it has a relation with it
  (:mod:`serving.relation`): it verified the operator with a ``match`` in the last
  :data:`serving.relation.RELATION_DAYS` days, or it watches the household already (watching again
  renews the watch while the merchant stays with the platform); otherwise the item is
  refused with ``no_relation``.
- A watch lasts :data:`WATCH_DAYS` domain days from the day it was made or renewed; an
  expired watch is neither listed nor given events, and is deleted on the next write.
- A key may hold at most its ``watch_cap`` watches (set at ``credref keys create``), and
  a platform over all its keys its ``platform_watch_cap`` (``credref keys platform``).
- A platform sees only its own watches and its own events: every read names it.

Events are written by :mod:`serving.events` during the daily refresh and at promotion,
one row per (platform, household, event), for the platforms watching that household on
the publication's day. Each platform's events are numbered by a sequence of its own
(``seq``: 1, 2, 3... with no gaps), so nothing in an event's id, a cursor or the order of
a platform's events depends on what other platforms watch. Rows are never changed once
written, and numbers only grow, so the same cursor always returns the same events; they
are kept :data:`KEEP_EVENT_DAYS` days, after which a cursor pointing before them gets
``cursor_expired``.

What a key reads is what its scopes would get from ``/v1/score``: a key without the
``score`` scope reads status changes only (what ``/v1/verify`` tells), never a class or a
reason code (:data:`STATUS_ONLY`).

A cursor is the last number a platform has read (its own count: nothing about others),
with a version byte and an HMAC over (platform, version, number): it cannot be forged or
moved to another platform, and stays valid across restarts. Cursors of the first version (global
ids) answer ``cursor_expired``: start again without one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from serving.state import Connection, Place, Postgres, place, writing

#: A watch lasts this many days unless renewed.
WATCH_DAYS = 400
#: Events are kept this many days after their publication's day.
KEEP_EVENT_DAYS = 90
MAX_PAGE = 1000
#: The event kinds a key without the ``score`` scope may read.
STATUS_ONLY = ("status_changed",)
CURSOR_VERSION = 2

_DDL = (
    """CREATE TABLE IF NOT EXISTS watches (
        platform TEXT NOT NULL, subject TEXT NOT NULL, key_id TEXT NOT NULL,
        watched_on TEXT NOT NULL, expires_on TEXT NOT NULL,
        PRIMARY KEY (platform, subject))""",
    "CREATE INDEX IF NOT EXISTS watches_key ON watches (key_id, expires_on)",
    "CREATE INDEX IF NOT EXISTS watches_subject ON watches (subject)",
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, platform TEXT NOT NULL,
        subject TEXT NOT NULL, kind TEXT NOT NULL, as_of TEXT NOT NULL,
        body TEXT NOT NULL, seq INTEGER)""",
    "CREATE INDEX IF NOT EXISTS events_day ON events (as_of)",
    """CREATE TABLE IF NOT EXISTS expired (
        platform TEXT PRIMARY KEY, through_id INTEGER NOT NULL)""",
    # each platform's last event number
    """CREATE TABLE IF NOT EXISTS feed_seq (
        platform TEXT PRIMARY KEY, last INTEGER NOT NULL)""",
    # What each watched household's answer was when events were last derived for it.
    """CREATE TABLE IF NOT EXISTS subject_state (
        subject TEXT PRIMARY KEY, status TEXT NOT NULL, risk_class TEXT,
        abnormal INTEGER, serious INTEGER, penalties INTEGER, severity INTEGER,
        model_version TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class CursorInvalid(ValueError):
    """Not a cursor this service issued to this platform (400 invalid_cursor)."""


class CursorExpired(ValueError):
    """The cursor points before events already deleted (410 cursor_expired)."""


class Answer(NamedTuple):
    """What a watched household's answer was, as far as its events go: status, class,
    and the flags the events follow (None when not operating)."""

    status: str
    risk_class: str | None
    abnormal: int | None
    serious: int | None
    penalties: int | None  # penalties in publicity
    severity: int | None  # the most severe of them (0-4)
    model_version: str


@dataclass(frozen=True)
class Refused:
    code: str
    message: str


CAP_REACHED = Refused("watch_cap_reached", "this key holds its maximum number of watches")
PLATFORM_CAP_REACHED = Refused(
    "platform_watch_cap_reached", "this platform holds its maximum number of watches"
)


@dataclass(frozen=True)
class Page:
    events: list[tuple[int, str, str, str]]  # (id, code, kind, the event's JSON as written)
    last_id: int
    more: bool


class Cursors:
    """Opaque cursors: ``base64url(version, number, HMAC(platform, version, number))``."""

    def __init__(self, secret: bytes):
        self._key = hmac.new(secret, b"credref change-feed cursor", hashlib.sha256).digest()

    def _mac(self, platform: str, head: bytes) -> bytes:
        msg = platform.encode() + b"\0" + head
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:12]

    def encode(self, platform: str, last_seq: int) -> str:
        head = struct.pack(">BQ", CURSOR_VERSION, last_seq)
        return base64.urlsafe_b64encode(head + self._mac(platform, head)).decode().rstrip("=")

    def decode(self, platform: str, cursor: str | None) -> int:
        """The event number a cursor stands for (0: from the start); raises CursorInvalid,
        or CursorExpired for a cursor of the first version (global ids)."""
        if not cursor:
            return 0
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError):
            raise CursorInvalid("the cursor is not one this service issued") from None
        if len(raw) == 20 and hmac.compare_digest(raw[8:], self._mac(platform, raw[:8])):
            raise CursorExpired("this cursor is from an earlier feed; start again without one")
        if len(raw) != 21 or not hmac.compare_digest(raw[9:], self._mac(platform, raw[:9])):
            raise CursorInvalid("the cursor is not one this service issued")
        version, last_seq = struct.unpack(">BQ", raw[:9])
        if version != CURSOR_VERSION:
            raise CursorInvalid("the cursor is not one this service issued")
        return last_seq


class WatchStore:
    """Watches, events and the watched households' last state: one SQLite file, or
    PostgreSQL shared by every host (serving.state)."""

    def __init__(self, where: Path | Postgres | Place, timeout_s: float = 5.0):
        self.place = place(where, "watch")
        self.path = self.place.path
        self.timeout_s = timeout_s
        self.place.prepare(_DDL, _number_events)

    def _connect(self) -> Connection:
        return self.place.connect()

    def exclusive(self) -> AbstractContextManager[None]:
        """One host at a time through the event step (serving.events.derive)."""
        return self.place.exclusive()

    # --- the platform's side ------------------------------------------------------------

    def watch(
        self,
        platform: str,
        key_id: str,
        codes: list[str],
        today: date,
        caps: tuple[int, int],
    ) -> dict[str, Refused | str]:
        """Watch (or renew) each code, all related to the platform (serving.relation),
        within the key's and the platform's ``caps``; returns code -> its expiry date, or
        why refused."""
        expires = (today + timedelta(days=WATCH_DAYS)).isoformat()
        out: dict[str, Refused | str] = {}
        with writing(self.place, self.timeout_s) as con:
            self._drop_expired(con, today)
            held = con.execute("SELECT count(*) FROM watches WHERE key_id = ?", (key_id,))
            room = caps[0] - held.fetchone()[0]
            held = con.execute("SELECT count(*) FROM watches WHERE platform = ?", (platform,))
            platform_room = caps[1] - held.fetchone()[0]
            for code in dict.fromkeys(codes):
                mine = con.execute(
                    "SELECT key_id FROM watches WHERE platform = ? AND subject = ?",
                    (platform, code),
                ).fetchone()
                if mine is None and platform_room <= 0:
                    out[code] = PLATFORM_CAP_REACHED
                    continue
                if mine is None or mine[0] != key_id:  # a new watch for this key
                    if room <= 0:
                        out[code] = CAP_REACHED
                        continue
                    room -= 1
                platform_room -= mine is None
                con.execute(
                    "INSERT INTO watches VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (platform, subject) DO UPDATE SET "
                    "key_id = excluded.key_id, watched_on = excluded.watched_on, "
                    "expires_on = excluded.expires_on",
                    (platform, code, key_id, today.isoformat(), expires),
                )
                out[code] = expires
            con.execute("COMMIT")
        return out

    def unwatch(self, platform: str, codes: list[str]) -> set[str]:
        """Stop watching; returns the codes that were watched."""
        with writing(self.place, self.timeout_s) as con:
            gone = set()
            for code in dict.fromkeys(codes):
                n = con.execute(
                    "DELETE FROM watches WHERE platform = ? AND subject = ?", (platform, code)
                ).rowcount
                if n:
                    gone.add(code)
            con.execute("COMMIT")
        return gone

    def watching(self, platform: str, codes: list[str], today: date) -> set[str]:
        """Which of ``codes`` the platform watches today (a live watch)."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT subject FROM watches WHERE platform = ? AND expires_on > ? "
                "AND subject IN (SELECT value FROM json_each(?))",
                (platform, today.isoformat(), json.dumps(codes)),
            ).fetchall()
        return {r[0] for r in rows}

    def listing(
        self, platform: str, today: date, after: str = "", limit: int = MAX_PAGE
    ) -> tuple[int, list[tuple[str, str]]]:
        """The platform's live watches: their count, and a page of (code, expiry) after
        the code ``after``, in code order."""
        day = today.isoformat()
        with self._connect() as con:
            (count,) = con.execute(
                "SELECT count(*) FROM watches WHERE platform = ? AND expires_on > ?",
                (platform, day),
            ).fetchone()
            page = con.execute(
                "SELECT subject, expires_on FROM watches WHERE platform = ? AND expires_on > ? "
                "AND subject > ? ORDER BY subject LIMIT ?",
                (platform, day, after, limit),
            ).fetchall()
        return count, [(s, e) for s, e in page]

    def page(
        self, platform: str, after: int, limit: int, kinds: tuple[str, ...] | None = None
    ) -> Page:
        """Up to ``limit`` of the platform's events numbered after ``after``, in order
        (only ``kinds``, if given). Raises CursorExpired when events after ``after`` were
        already deleted."""
        only = "" if kinds is None else "AND kind IN (SELECT value FROM json_each(?)) "
        args = (platform, after) + (() if kinds is None else (json.dumps(kinds),))
        with self._connect() as con:
            self.place.begin_read(con)  # the expiry and the page from one state of the store
            row = con.execute(
                "SELECT through_id FROM expired WHERE platform = ?", (platform,)
            ).fetchone()
            if after and row is not None and after < row[0]:
                raise CursorExpired(
                    f"events after this cursor were deleted ({KEEP_EVENT_DAYS} days are kept); "
                    "start again without a cursor"
                )
            rows = con.execute(
                f"SELECT seq, subject, kind, body FROM events WHERE platform = ? AND seq > ? "
                f"{only}ORDER BY seq LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
            con.execute("ROLLBACK")
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, rows[-1][0] if rows else after, more)

    # --- the refresh's side (serving.events) -------------------------------------------

    def watched(self, day: date) -> list[str]:
        """Every household some platform watches on ``day`` (watched on or before it, not
        expired), in code order."""
        d = day.isoformat()
        with self._connect() as con:
            rows = con.execute(
                "SELECT DISTINCT subject FROM watches WHERE watched_on <= ? AND expires_on > ? "
                "ORDER BY subject",
                (d, d),
            ).fetchall()
        return [r[0] for r in rows]

    def by_platform(self, day: date) -> dict[str, set[str]]:
        """Each platform's live watched codes on ``day`` (for the impact of a challenger)."""
        d = day.isoformat()
        out: dict[str, set[str]] = {}
        with self._connect() as con:
            rows = con.execute(
                "SELECT platform, subject FROM watches WHERE watched_on <= ? AND expires_on > ?",
                (d, d),
            )
            for platform, code in rows:
                out.setdefault(platform, set()).add(code)
        return out

    def watchers(self, day: date, codes: Iterable[str]) -> list[tuple[str, str]]:
        """The platforms watching each of ``codes`` on ``day``, as (platform, code)."""
        d = day.isoformat()
        with self._connect() as con:
            return con.execute(
                "SELECT platform, subject FROM watches WHERE watched_on <= ? AND expires_on > ? "
                "AND subject IN (SELECT value FROM json_each(?))",
                (d, d, json.dumps(list(codes))),
            ).fetchall()

    def states(self, codes: Iterable[str] | None = None) -> pa.Table:
        """The answer events were last derived from, per code (all codes if None): an
        Arrow table of the code and the :class:`Answer` fields."""
        with self._connect() as con:
            if codes is None:
                rows = con.execute("SELECT * FROM subject_state").fetchall()
            else:
                rows = con.execute(
                    "SELECT * FROM subject_state WHERE subject IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(codes)),),
                ).fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [()] * (len(Answer._fields) + 1)
        types = (pa.string(), pa.string(), pa.string(), *[pa.int64()] * 4, pa.string())
        names = ("uscc", *Answer._fields)
        return pa.table(
            {n: pa.array(list(c), t) for n, c, t in zip(names, columns, types, strict=True)}
        )

    def baseline(self, answers: dict[str, Answer]) -> None:
        """Record a first answer for codes that have none (a household newly watched), so
        the next refresh reports only what changed after the watch."""
        with writing(self.place, self.timeout_s) as con:
            con.executemany(
                "INSERT INTO subject_state VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (subject) DO NOTHING",
                [(s, *a) for s, a in answers.items()],
            )
            con.execute("COMMIT")

    def derived_for(self) -> str | None:
        """The (publication, model version) events were last derived for, as one string."""
        with self._connect() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'derived_for'").fetchone()
        return row[0] if row else None

    def record(
        self,
        events: list[tuple[str, str, str, str, str]],
        changed: dict[str, Answer],
        derived_for: str,
        today: date,
    ) -> None:
        """In one transaction: append events (platform, code, kind, as_of, JSON body),
        set the answers that changed, forget households no longer watched, delete old
        events and expired watches."""
        with writing(self.place, self.timeout_s) as con:
            self.append_events(con, events)
            con.executemany(
                "INSERT INTO subject_state VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (subject) DO UPDATE SET status = excluded.status, "
                "risk_class = excluded.risk_class, abnormal = excluded.abnormal, "
                "serious = excluded.serious, penalties = excluded.penalties, "
                "severity = excluded.severity, model_version = excluded.model_version",
                [(s, *a) for s, a in changed.items()],
            )
            con.execute(
                "INSERT INTO meta VALUES ('derived_for', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (derived_for,),
            )
            self._expire_events(con, today)
            self._drop_expired(con, today)
            con.execute(
                "DELETE FROM subject_state WHERE subject NOT IN (SELECT subject FROM watches)"
            )
            con.execute("COMMIT")

    @staticmethod
    def append_events(con: Connection, events: list[tuple[str, str, str, str, str]]) -> None:
        """Append events (platform, code, kind, as_of, JSON body), each platform's numbered
        on from its last, in the caller's write transaction."""
        con.executemany(
            "INSERT INTO events (platform, subject, kind, as_of, body, seq) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            _numbered(con, events),
        )

    def _expire_events(self, con: Connection, today: date) -> None:
        before = (today - timedelta(days=KEEP_EVENT_DAYS)).isoformat()
        for platform, through in con.execute(
            "SELECT platform, max(seq) FROM events WHERE as_of < ? GROUP BY platform", (before,)
        ).fetchall():
            con.execute(
                "INSERT INTO expired VALUES (?, ?) ON CONFLICT (platform) DO UPDATE SET "
                "through_id = CASE WHEN excluded.through_id > expired.through_id "
                "THEN excluded.through_id ELSE expired.through_id END",
                (platform, through),
            )
        con.execute("DELETE FROM events WHERE as_of < ?", (before,))

    @staticmethod
    def _drop_expired(con: Connection, today: date) -> None:
        con.execute("DELETE FROM watches WHERE expires_on <= ?", (today.isoformat(),))


def _numbered(con: Connection, events: list[tuple]) -> list[tuple]:
    """The events with each platform's next numbers, in the order given; the platforms'
    counters moved on (in the caller's transaction)."""
    last = dict(con.execute("SELECT platform, last FROM feed_seq").fetchall())
    out = []
    for event in events:
        last[event[0]] = last.get(event[0], 0) + 1
        out.append((*event, last[event[0]]))
    con.executemany(
        "INSERT INTO feed_seq VALUES (?, ?) ON CONFLICT (platform) DO UPDATE SET last = excluded.last",
        list(last.items()),
    )
    return out


def _number_events(con: Connection) -> None:
    """A store made when events had one global id: add the platforms' own numbers
    (cursors of then answer cursor_expired; the deleted range starts again at 0)."""
    columns = {r[1] for r in con.execute("PRAGMA table_info(events)")}
    if "seq" not in columns:
        con.execute("ALTER TABLE events ADD COLUMN seq INTEGER")
    if con.execute("SELECT 1 FROM events WHERE seq IS NULL LIMIT 1").fetchone():
        con.execute(
            "UPDATE events SET seq = n.seq FROM (SELECT id, row_number() OVER "
            "(PARTITION BY platform ORDER BY id) AS seq FROM events) n WHERE events.id = n.id"
        )
        con.execute("DELETE FROM feed_seq")
        con.execute("INSERT INTO feed_seq SELECT platform, max(seq) FROM events GROUP BY platform")
        con.execute("DELETE FROM expired")
    con.execute("CREATE UNIQUE INDEX IF NOT EXISTS events_seq ON events (platform, seq)")
