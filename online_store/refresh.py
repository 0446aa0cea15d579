"""``credref refresh``: bring the warehouse and the online store to the domain's today.

1. Apply, in date order, every change set in the feed folder not yet applied
   (``records.ingest``; each is its own transaction, so a stopped refresh resumes).
2. Choose the publication date: the date given, else the latest change set's. It is
   never silently in the past: a date before the current publication, or ahead of the
   last change set (records not yet received), is refused unless forced.
3. Bring the online store to that date in place, rewriting only the households whose
   answer inputs changed (``online_store.incremental``), and report them: added, removed,
   status changes, by column and by reason code. Without a publication to refresh (or
   one of another layout or catalogue) it is a full build (``online_store.publish``), which
   ``--full`` asks for. Either way the result equals a full recomputation of the day.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from features.engines import export_tables, spark_session
from online_store.incremental import NotIncremental, plan, refresh_in_place
from online_store.publish import publish
from online_store.reader import NoSnapshot, describe_current
from online_store.spark_refresh import read_changes, spark_recompute
from records.changeset import ChangeSet, is_changeset, read_changeset
from records.ingest import ingest
from records.warehouse import connect

logger = logging.getLogger(__name__)


class RefreshRefused(ValueError):
    """The refresh would publish a date it must not (nothing was published)."""


@dataclass
class RefreshReport:
    applied: list[date]  # change sets applied by this run
    as_of: date
    publication: str
    households: int
    kind: str = "incremental"  # or "full"
    why_full: str = ""
    rewritten: int = 0  # households whose row was written (all of them when full)
    added: int = 0
    removed: int = 0
    status_changed: int = 0
    records_learnt: int = 0
    recomputed: int = 0  # households whose row was recomputed (all when full)
    seconds: dict[str, float] = field(default_factory=dict)  # by step: ingest, recompute, write
    changed_by_feature: dict[str, int] = field(default_factory=dict)
    changed_by_reason: dict[str, int] = field(default_factory=dict)
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
    """The current publication's name and day (``None`` if nothing, or an older layout,
    is published: it is rebuilt)."""
    try:
        meta = describe_current(online)
    except (NoSnapshot, ValueError):
        return None, None
    return meta["publication"], date.fromisoformat(meta["as_of"])


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


@dataclass(frozen=True)
class Recomputation:
    """Where the day's difference is computed: ``duckdb`` (default), ``spark`` (in
    process, on ``spark_master``), or read from ``changes`` (a cluster run's output)."""

    engine: str = "duckdb"
    spark_master: str = "local[2]"
    changes: Path | None = None


def refresh(
    warehouse: Path,
    feed: Path | None,
    online: Path,
    secret: bytes,
    as_of: date | None = None,
    force: bool = False,
    memory_limit: str | None = None,
    full: bool = False,
    how: Recomputation | None = None,
) -> RefreshReport:
    applied = []
    started = time.perf_counter()
    for cs in pending(warehouse, feed) if feed is not None else []:
        ingest(cs.folder, warehouse, progress=False, memory_limit=memory_limit)
        applied.append(cs.day)
        logger.info("change set %s applied", cs.day)
    ingested = round(time.perf_counter() - started, 2)
    previous, current = _current_as_of(online)
    day = choose_date(as_of, _last_changeset(warehouse), current, force)
    con = connect(warehouse, read_only=True, memory_limit=memory_limit)
    # Rows go to a table keyed by code: their order is free, and keeping it costs memory.
    con.execute("SET preserve_insertion_order = false")
    try:
        if full or previous is None:
            why = "asked" if full else "first"
            return _full(con, day, online, secret, applied, why, previous)
        try:
            recompute = _recompute(how or Recomputation(), con, warehouse, online, day)
            c = refresh_in_place(con, day, online, secret, recompute)
        except NotIncremental as why:
            logger.warning("full rebuild: %s", why)
            return _full(con, day, online, secret, applied, str(why), previous)
    finally:
        con.close()
    return RefreshReport(
        applied,
        day,
        c.publication,
        c.households,
        rewritten=c.rewritten,
        added=c.added,
        removed=c.removed,
        status_changed=c.status_changed,
        records_learnt=c.records_learnt,
        recomputed=c.recomputed,
        seconds={"ingest": ingested, **c.seconds},
        changed_by_feature=c.by_column,
        changed_by_reason=c.by_reason,
        previous=c.previous,
    )


def _recompute(how: Recomputation, con, warehouse: Path, online: Path, day: date):
    """The :data:`online_store.incremental.Recompute` for ``how`` (None: DuckDB)."""
    if how.changes is not None:
        before = plan(online)["publication"]
        return lambda _query: read_changes(how.changes, before, day)
    if how.engine == "spark":
        tables = warehouse.with_suffix(".tables")
        export_tables(con, tables)  # what Spark reads: every table and its history
        return spark_recompute(spark_session(how.spark_master, "credref refresh"), str(tables))
    return None


def _full(con, day: date, online: Path, secret: bytes, applied: list[date], why: str, previous):
    meta = publish(con, day, online, secret)
    n = int(meta["households"])
    return RefreshReport(
        applied,
        day,
        meta["publication"],
        n,
        "full",
        why,
        rewritten=n,
        recomputed=n,
        previous=previous,
    )
