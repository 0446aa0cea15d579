"""``credref refresh``: bring the warehouse and the online store to the domain's today.

1. Apply, in date order, every change set in the feed folder not yet applied
   (``features.ingest``; each is its own transaction, so a stopped refresh resumes).
2. Choose the publication date: the date given, else the latest change set's. It is
   never silently in the past: a date before the current publication, or ahead of the
   last change set (records not yet received), is refused unless forced.
3. Publish as of that date (``serving.publish``: a full recomputation from the
   warehouse, switched in atomically) and report what changed against the previous
   publication: households added, status changes, and households whose features moved,
   by feature.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from features.catalogue import FEATURE_NAMES
from features.changeset import ChangeSet, is_changeset, read_changeset
from features.ingest import ingest
from features.warehouse import connect
from serving.online import NoSnapshot, describe_current
from serving.publish import publish

logger = logging.getLogger(__name__)


class RefreshRefused(ValueError):
    """The refresh would publish a date it must not (nothing was published)."""


@dataclass
class RefreshReport:
    applied: list[date]  # change sets applied by this run
    as_of: date
    publication: str
    households: int
    added: int = 0  # households not in the previous publication
    status_changed: int = 0
    changed_by_feature: dict[str, int] = field(default_factory=dict)
    previous: str | None = None


def pending(warehouse: Path, feed: Path) -> list[ChangeSet]:
    """Change sets in ``feed`` not yet applied, in date order (each read once)."""
    sets = sorted(
        (read_changeset(p) for p in feed.iterdir() if is_changeset(p)), key=lambda cs: cs.day
    )
    if not warehouse.exists():
        return sets
    con = connect(warehouse, read_only=True)
    try:
        applied = {r[0] for r in con.execute("SELECT day FROM _changesets").fetchall()}
    finally:
        con.close()
    return [cs for cs in sets if cs.day not in applied]


def _last_changeset(warehouse: Path) -> date | None:
    con = connect(warehouse, read_only=True)
    try:
        return con.execute("SELECT max(day) FROM _changesets").fetchall()[0][0]
    finally:
        con.close()


def _current_as_of(online: Path) -> tuple[str | None, date | None]:
    try:
        meta = describe_current(online)
    except NoSnapshot:
        return None, None
    return meta["file"], date.fromisoformat(meta["as_of"])


def choose_date(given: date | None, last: date | None, current: date | None, force: bool) -> date:
    """The publication date: ``given``, else the last change set's; refusals named."""
    day = given or last
    if day is None:
        raise RefreshRefused("no change set applied and no --as-of date given")
    if not force and last is not None and day > last:
        raise RefreshRefused(
            f"{day} is ahead of the last change set ({last}): its records have not arrived; "
            "use --force to publish it anyway"
        )
    if not force and current is not None and day < current:
        raise RefreshRefused(
            f"{day} is before the current publication ({current}); use --force to go back"
        )
    return day


def refresh(
    warehouse: Path,
    feed: Path | None,
    online: Path,
    secret: bytes,
    as_of: date | None = None,
    force: bool = False,
    memory_limit: str | None = None,
) -> RefreshReport:
    applied = []
    for cs in pending(warehouse, feed) if feed is not None else []:
        ingest(cs.folder, warehouse, progress=False, memory_limit=memory_limit)
        applied.append(cs.day)
        logger.info("change set %s applied", cs.day)
    previous, current = _current_as_of(online)
    day = choose_date(as_of, _last_changeset(warehouse), current, force)
    con = connect(warehouse, read_only=True, memory_limit=memory_limit)
    try:
        meta = publish(con, day, online, secret)
    finally:
        con.close()
    report = RefreshReport(applied, day, meta["file"], int(meta["households"]), previous=previous)
    if previous is not None:
        _diff(online / previous, online / meta["file"], report)
    return report


def _diff(old: Path, new: Path, report: RefreshReport) -> None:
    """What the new publication changes against the previous one, household by household."""
    con = sqlite3.connect(f"file:{new}?mode=ro", uri=True)
    try:
        con.execute("ATTACH DATABASE ? AS o", (f"file:{old}?mode=ro",))
        report.added = con.execute(
            "SELECT count(*) FROM subjects n WHERE NOT EXISTS "
            "(SELECT 1 FROM o.subjects p WHERE p.uscc = n.uscc)"
        ).fetchone()[0]
        sums = ", ".join(f"sum(n.{f} IS NOT p.{f})" for f in ("status", *FEATURE_NAMES))
        row = con.execute(
            f"SELECT {sums} FROM subjects n JOIN o.subjects p ON p.uscc = n.uscc"
        ).fetchone()
    finally:
        con.close()
    report.status_changed = int(row[0] or 0)
    report.changed_by_feature = {
        f: int(n or 0) for f, n in zip(FEATURE_NAMES, row[1:], strict=True) if n
    }
