"""Merchant monitoring, store side: which platform watches which household, and the events
each platform reads from its change feed (SQLite in WAL mode, shared by every worker and
by ``credref refresh``).

The rules (minimum necessity):

- A platform may watch a household only if it verified it with at least one ``match`` in
  the last :data:`MATCH_WINDOW_DAYS` days (the limits store remembers the last match:
  :meth:`serving.limits.VerifyLimits.matched_since`); otherwise the item is refused with
  ``no_recent_match``. Watching again renews the watch, under the same rule.
- A watch lasts :data:`WATCH_DAYS` domain days from the day it was made or renewed; an
  expired watch is neither listed nor given events, and is deleted on the next write.
- A key may hold at most its ``watch_cap`` watches (set at ``credref keys create``).
- A platform sees only its own watches and its own events: every read names it.

Events are written by :mod:`serving.events` during the daily refresh and at promotion,
one row per (platform, household, event), for the platforms watching that household on
the publication's day. Rows are never changed once written, and ids only grow, so the
same cursor always returns the same events; they are kept :data:`KEEP_EVENT_DAYS` days,
after which a cursor pointing before them gets ``cursor_expired``.

A cursor is the last event id a platform has read, with an HMAC over (platform, id): it
is opaque to the platform, cannot be forged or moved to another platform, and, being a
plain id underneath, stays valid across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from serving.sqlite_lock import begin_immediate

#: A watch needs a verification with a match this recently (days, by the wall clock).
MATCH_WINDOW_DAYS = 30
#: A watch lasts this many days unless renewed.
WATCH_DAYS = 400
#: Events are kept this many days after their publication's day.
KEEP_EVENT_DAYS = 90
MAX_PAGE = 1000

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
        body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_platform ON events (platform, id)",
    "CREATE INDEX IF NOT EXISTS events_day ON events (as_of)",
    """CREATE TABLE IF NOT EXISTS expired (
        platform TEXT PRIMARY KEY, through_id INTEGER NOT NULL)""",
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


NO_RECENT_MATCH = Refused(
    "no_recent_match",
    f"watch only a household this platform verified with a match in the last "
    f"{MATCH_WINDOW_DAYS} days",
)
CAP_REACHED = Refused("watch_cap_reached", "this key holds its maximum number of watches")


@dataclass(frozen=True)
class Page:
    events: list[tuple[int, str, str, str]]  # (id, code, kind, the event's JSON as written)
    last_id: int
    more: bool


class Cursors:
    """Opaque cursors: ``base64url(id, HMAC(platform, id))``."""

    def __init__(self, secret: bytes):
        self._key = hmac.new(secret, b"credref change-feed cursor", hashlib.sha256).digest()

    def _mac(self, platform: str, last_id: int) -> bytes:
        msg = platform.encode() + b"\0" + struct.pack(">Q", last_id)
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:12]

    def encode(self, platform: str, last_id: int) -> str:
        raw = struct.pack(">Q", last_id) + self._mac(platform, last_id)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, platform: str, cursor: str | None) -> int:
        """The event id a cursor stands for (0: from the start); raises CursorInvalid."""
        if not cursor:
            return 0
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError):
            raise CursorInvalid("the cursor is not one this service issued") from None
        if len(raw) != 20:
            raise CursorInvalid("the cursor is not one this service issued")
        (last_id,) = struct.unpack(">Q", raw[:8])
        if not hmac.compare_digest(raw[8:], self._mac(platform, last_id)):
            raise CursorInvalid("the cursor is not one this service issued")
        return last_id


class WatchStore:
    """Watches, events and the watched households' last state, in one SQLite file."""

    def __init__(self, path: Path, timeout_s: float = 5.0):
        self.path = path
        self.timeout_s = timeout_s
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            for ddl in _DDL:
                con.execute(ddl)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def _write(self) -> sqlite3.Connection:
        con = self._connect()
        begin_immediate(con, self.timeout_s)
        return con

    # --- the platform's side ------------------------------------------------------------

    def watch(
        self,
        platform: str,
        key_id: str,
        codes: list[str],
        today: date,
        matched: set[str],
        cap: int,
    ) -> dict[str, Refused | str]:
        """Watch (or renew) each code; returns code -> its expiry date, or why refused."""
        expires = (today + timedelta(days=WATCH_DAYS)).isoformat()
        out: dict[str, Refused | str] = {}
        con = self._write()
        try:
            self._drop_expired(con, today)
            held = con.execute("SELECT count(*) FROM watches WHERE key_id = ?", (key_id,))
            room = cap - held.fetchone()[0]
            for code in dict.fromkeys(codes):
                if code not in matched:
                    out[code] = NO_RECENT_MATCH
                    continue
                mine = con.execute(
                    "SELECT key_id FROM watches WHERE platform = ? AND subject = ?",
                    (platform, code),
                ).fetchone()
                if mine is None or mine[0] != key_id:  # a new watch for this key
                    if room <= 0:
                        out[code] = CAP_REACHED
                        continue
                    room -= 1
                con.execute(
                    "INSERT INTO watches VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                    "key_id = excluded.key_id, watched_on = excluded.watched_on, "
                    "expires_on = excluded.expires_on",
                    (platform, code, key_id, today.isoformat(), expires),
                )
                out[code] = expires
            con.execute("COMMIT")
        finally:
            _close(con)
        return out

    def unwatch(self, platform: str, codes: list[str]) -> set[str]:
        """Stop watching; returns the codes that were watched."""
        con = self._write()
        try:
            gone = set()
            for code in dict.fromkeys(codes):
                n = con.execute(
                    "DELETE FROM watches WHERE platform = ? AND subject = ?", (platform, code)
                ).rowcount
                if n:
                    gone.add(code)
            con.execute("COMMIT")
        finally:
            _close(con)
        return gone

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

    def page(self, platform: str, after_id: int, limit: int) -> Page:
        """Up to ``limit`` of the platform's events after ``after_id``, in id order.
        Raises CursorExpired when events after ``after_id`` were already deleted."""
        with self._connect() as con:
            con.execute("BEGIN")  # the expiry and the page from one state of the file
            row = con.execute(
                "SELECT through_id FROM expired WHERE platform = ?", (platform,)
            ).fetchone()
            if after_id and row is not None and after_id < row[0]:
                raise CursorExpired(
                    f"events after this cursor were deleted ({KEEP_EVENT_DAYS} days are kept); "
                    "start again without a cursor"
                )
            rows = con.execute(
                "SELECT id, subject, kind, body FROM events WHERE platform = ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (platform, after_id, limit + 1),
            ).fetchall()
            con.rollback()
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, rows[-1][0] if rows else after_id, more)

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
        con = self._write()
        try:
            con.executemany(
                "INSERT OR IGNORE INTO subject_state VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(s, *a) for s, a in answers.items()],
            )
            con.execute("COMMIT")
        finally:
            _close(con)

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
        con = self._write()
        try:
            con.executemany(
                "INSERT INTO events (platform, subject, kind, as_of, body) VALUES (?, ?, ?, ?, ?)",
                events,
            )
            con.executemany(
                "INSERT OR REPLACE INTO subject_state VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(s, *a) for s, a in changed.items()],
            )
            con.execute(
                "INSERT INTO meta VALUES ('derived_for', ?) ON CONFLICT DO UPDATE SET value = excluded.value",
                (derived_for,),
            )
            self._expire_events(con, today)
            self._drop_expired(con, today)
            con.execute(
                "DELETE FROM subject_state WHERE subject NOT IN (SELECT subject FROM watches)"
            )
            con.execute("COMMIT")
        finally:
            _close(con)

    def _expire_events(self, con: sqlite3.Connection, today: date) -> None:
        before = (today - timedelta(days=KEEP_EVENT_DAYS)).isoformat()
        for platform, through in con.execute(
            "SELECT platform, max(id) FROM events WHERE as_of < ? GROUP BY platform", (before,)
        ).fetchall():
            con.execute(
                "INSERT INTO expired VALUES (?, ?) ON CONFLICT DO UPDATE SET "
                "through_id = max(through_id, excluded.through_id)",
                (platform, through),
            )
        con.execute("DELETE FROM events WHERE as_of < ?", (before,))

    @staticmethod
    def _drop_expired(con: sqlite3.Connection, today: date) -> None:
        con.execute("DELETE FROM watches WHERE expires_on <= ?", (today.isoformat(),))


def _close(con: sqlite3.Connection) -> None:
    if con.in_transaction:
        con.execute("ROLLBACK")
    con.close()
