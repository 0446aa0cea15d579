"""Objections (异议): a household disputes one of its records; the regulator resolves it.

While an objection is open, every answer that serves a reason the disputed record
stands behind marks that reason ``under_objection`` (``serving.service``), and the
platforms watching the household are told when it opens and when it is resolved
(``objection_opened`` / ``objection_resolved`` in their feed). Resolution takes a second
person (four eyes, as promotion does): ``upheld`` (the record is then corrected through
a change set, ``credref ingest`` and ``credref refresh``, and the answer recomputed) or
``rejected`` (the marker goes). The household's own statement (本人声明) is kept here, in
the domain: its report shows it, no platform ever receives it.

An objection's times are kept, never overwritten, so the markers an answer carried can
be rebuilt for the moment it was given (``credref audit replay``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from scoring.model import REASON_SEPARATOR, reason_details
from serving.state import Connection, Place, Postgres, place, writing
from serving.watch import WatchStore

OUTCOMES = ("upheld", "rejected")
#: Feed event kinds (``serving.watch``): the household's reason codes, never the record.
OPENED, RESOLVED = "objection_opened", "objection_resolved"

DDL = (
    """CREATE TABLE IF NOT EXISTS objections (
        id TEXT PRIMARY KEY, subject TEXT NOT NULL, record_kind TEXT NOT NULL,
        record_ref TEXT NOT NULL, record_dated TEXT NOT NULL, reasons TEXT NOT NULL,
        statement TEXT NOT NULL, opened_at TEXT NOT NULL, opened_by TEXT NOT NULL,
        resolved_at TEXT, resolved_by TEXT, outcome TEXT)""",
    "CREATE INDEX IF NOT EXISTS objections_subject ON objections (subject)",
)


@dataclass(frozen=True)
class Told:
    """What an objection's feed event names beside it: the day, and the publication and
    model version the platform's answers come from then."""

    day: date
    publication: str
    model_version: str


class ObjectionRefused(ValueError):
    """An objection that cannot be opened or resolved as asked (said in one line)."""


@dataclass(frozen=True)
class Objection:
    id: str
    subject: str
    record_kind: str
    record_ref: str
    record_dated: str
    reasons: tuple[str, ...]
    statement: str
    opened_at: str
    opened_by: str
    resolved_at: str | None = None
    resolved_by: str | None = None
    outcome: str | None = None

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _person(name: str) -> str:
    """A person's name as the four-eyes rule compares it (case and spaces aside)."""
    return " ".join(name.split()).casefold()


class ObjectionStore:
    """Objections beside the watch lists and the feed they are told in (the watch
    store's place: its SQLite file, or the shared PostgreSQL database)."""

    def __init__(self, where: Path | Postgres | Place, timeout_s: float = 5.0):
        self.place = place(where, "watch")
        self.timeout_s = timeout_s
        self.place.prepare(DDL, None)
        self.watches = WatchStore(self.place)

    def _read(self, sql: str, args: tuple = ()) -> list[Objection]:
        con = self.place.connect()
        try:
            rows = con.execute(sql, args).fetchall()
        finally:
            con.close()
        return [_objection(r) for r in rows]

    def listing(self, subject: str | None = None, only_open: bool = False) -> list[Objection]:
        """Every objection (of one household), oldest first."""
        where = ["1 = 1"]
        args: list = []
        if subject is not None:
            where.append("subject = ?")
            args.append(subject)
        if only_open:
            where.append("resolved_at IS NULL")
        return self._read(
            f"SELECT * FROM objections WHERE {' AND '.join(where)} ORDER BY opened_at, id",
            tuple(args),
        )

    def disputed(self, subjects: list[str], at: str | None = None) -> dict[str, set[str]]:
        """The reason codes under objection for each household, now (or at the moment
        ``at``, an ISO time: what an answer given then carried)."""
        if not subjects:
            return {}
        when = at or _now()
        found = self._read(
            "SELECT * FROM objections WHERE subject IN (SELECT value FROM json_each(?)) "
            "AND opened_at <= ? AND (resolved_at IS NULL OR resolved_at > ?)",
            (json.dumps(list(subjects)), when, when),
        )
        out: dict[str, set[str]] = {}
        for o in found:
            out.setdefault(o.subject, set()).update(o.reasons)
        return out

    def markers(self, subject: str, at: str, reasons: str) -> str:
        """Which of an answer's reason codes (joined as the audit row joins them) were under
        objection at the moment ``at``, joined the same way: what ``credref audit replay``
        compares with the markers the answer carried."""
        then = self.disputed([subject], at).get(subject, set())
        return REASON_SEPARATOR.join(c for c in reasons.split(REASON_SEPARATOR) if c in then)

    def open(
        self,
        subject: str,
        record: tuple[str, str, str],
        reasons: list[str],
        statement: str,
        by: str,
        told: Told,
    ) -> Objection:
        """Open an objection to one record (kind, own reference, date) behind ``reasons``;
        the watching platforms are told in the same transaction."""
        if not by.strip():
            raise ObjectionRefused("the person registering the objection is required (--by)")
        kind, ref, dated = record
        o = Objection(
            id=f"obj_{secrets.token_hex(6)}",
            subject=subject,
            record_kind=kind,
            record_ref=ref,
            record_dated=dated,
            reasons=tuple(sorted(reasons)),
            statement=statement,
            opened_at=_now(),
            opened_by=by.strip(),
        )
        with writing(self.place, self.timeout_s) as con:
            con.execute(
                "INSERT INTO objections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                (o.id, subject, kind, ref, dated, json.dumps(list(o.reasons)), statement,
                 o.opened_at, o.opened_by),
            )  # fmt: skip
            self._tell(con, o, OPENED, told, {})
            con.execute("COMMIT")
        return o

    def resolve(self, objection_id: str, outcome: str, by: str, told: Told) -> Objection:
        """Resolve an open objection (``upheld`` or ``rejected``) by a second person; the
        watching platforms are told in the same transaction."""
        if outcome not in OUTCOMES:
            raise ObjectionRefused(f"the outcome must be one of {', '.join(OUTCOMES)}")
        if not by.strip():
            raise ObjectionRefused("the person resolving the objection is required (--by)")
        with writing(self.place, self.timeout_s) as con:
            row = con.execute("SELECT * FROM objections WHERE id = ?", (objection_id,)).fetchone()
            if row is None:
                raise ObjectionRefused("no objection with this id")
            o = _objection(row)
            if not o.is_open:
                raise ObjectionRefused(f"the objection was already resolved ({o.outcome})")
            if _person(by) == _person(o.opened_by):
                raise ObjectionRefused(
                    "four eyes: the person who registered the objection cannot resolve it"
                )
            resolved = Objection(
                **{
                    **o.__dict__,
                    "resolved_at": _now(),
                    "resolved_by": by.strip(),
                    "outcome": outcome,
                }
            )
            con.execute(
                "UPDATE objections SET resolved_at = ?, resolved_by = ?, outcome = ? WHERE id = ?",
                (resolved.resolved_at, resolved.resolved_by, outcome, objection_id),
            )
            self._tell(con, resolved, RESOLVED, told, {"outcome": outcome})
            con.execute("COMMIT")
        return resolved

    def _tell(self, con: Connection, o: Objection, kind: str, told: Told, detail: dict) -> None:
        """An event for every platform watching the household on the day (the reason codes
        the record stands behind, the outcome; never the record, never the statement)."""
        d = told.day.isoformat()
        watchers = con.execute(
            "SELECT platform FROM watches WHERE subject = ? AND watched_on <= ? AND expires_on > ?",
            (o.subject, d, d),
        ).fetchall()
        body = json.dumps(
            {
                "uscc": o.subject,
                "kind": kind,
                "publication": told.publication,
                "model_version": told.model_version,
                "objection": o.id,
                "reasons": reason_details(o.reasons),
                **detail,
            },
            ensure_ascii=False,
        )
        events = [(platform, o.subject, kind, d, body) for (platform,) in watchers]
        self.watches.append_events(con, events)


def _objection(row) -> Objection:
    values = list(row)
    values[5] = tuple(json.loads(values[5]))
    return Objection(*values)
