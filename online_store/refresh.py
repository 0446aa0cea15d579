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

On several hosts (:mod:`online_store.changes`) the refresh host also writes the day's
difference for the serving hosts (``share``), and each serving host applies it to its
copy of the publication (``Recomputation.changes``) without a warehouse.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from features.engines import export_tables, spark_session
from online_store.changes import SharedChanges, days_to_apply, is_day_folder, read_changes
from online_store.incremental import Changes, NotIncremental, Sharing, plan, refresh_in_place
from online_store.publish import publish
from online_store.reader import NoSnapshot, describe_current
from online_store.spark_refresh import spark_recompute
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
    kind: str = "incremental"  # or "full", or "unchanged" (a serving host at the latest)
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
    shared: Path | None = None  # where the day's difference was written for other hosts
    caught_up: list[date] = field(default_factory=list)  # shared days a serving host applied


def applied_days(warehouse: Path) -> set[date]:
    """The days whose change sets the warehouse holds (read once, before any is applied)."""
    if not warehouse.exists():
        return set()
    con = connect(warehouse, read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT day FROM _changesets").fetchall()}
    finally:
        con.close()


def _last_changeset(warehouse) -> date | None:
    """The day of the last change set the warehouse holds (None: only a first load)."""
    return warehouse.execute("SELECT max(day) FROM _changesets").fetchone()[0]


def pending(feed: Path, applied: set[date]) -> list[ChangeSet]:
    """Change sets in ``feed`` not in ``applied``, in date order (each read once)."""
    sets = (read_changeset(p) for p in feed.iterdir() if is_changeset(p))
    return sorted((cs for cs in sets if cs.day not in applied), key=lambda cs: cs.day)


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
    #: write the day's difference under this folder, one folder per day (``YYYY-MM-DD``),
    #: for the serving hosts (the refresh host's side)
    share: Path | None = None


@dataclass(frozen=True)
class RefreshTask:
    """What one ``credref refresh`` is asked to do: the warehouse and its feed, the online
    store and the secret its verification hashes are keyed with, the day wanted (``None``:
    the last change set's), whether to publish it anyway (``force``), to rebuild
    (``full``), and where the day's difference is computed (``how``)."""

    warehouse: Path
    feed: Path | None
    online: Path
    secret: bytes
    as_of: date | None = None
    force: bool = False
    memory_limit: str | None = None
    full: bool = False
    how: Recomputation = Recomputation()


def refresh(task: RefreshTask) -> RefreshReport:
    """Apply the feed, choose the day, bring the online store to it (see the module)."""
    if task.how.changes is not None and not is_day_folder(task.how.changes):
        return _catch_up(task)  # a serving host's timer: every day it has not applied
    if task.how.changes is not None:
        shared = read_changes(task.how.changes, plan(task.online)["publication"], task.as_of)
        if shared.made is not None:  # the refresh host's: no warehouse, no feed here
            return _apply_shared(task, shared)
    started = time.perf_counter()
    applied = []
    if task.feed is not None:
        for cs in pending(task.feed, applied_days(task.warehouse)):
            ingest(cs.folder, task.warehouse, progress=False, memory_limit=task.memory_limit)
            applied.append(cs.day)
            logger.info("change set %s applied", cs.day)
    ingested = round(time.perf_counter() - started, 2)
    previous, current = _current_as_of(task.online)
    con = connect(task.warehouse, read_only=True, memory_limit=task.memory_limit)
    # Rows go to a table keyed by code: their order is free, and keeping it costs memory.
    con.execute("SET preserve_insertion_order = false")
    try:
        day = choose_date(task.as_of, _last_changeset(con), current, task.force)
        if task.full or previous is None:
            return _full(con, day, task, applied, "asked" if task.full else "first", previous)
        try:
            recompute = _recompute(task, con, day)
            to = task.how.share / day.isoformat() if task.how.share is not None else None
            c = refresh_in_place(con, day, task.online, task.secret, recompute, Sharing(to=to))
        except NotIncremental as why:
            logger.warning("full rebuild: %s", why)
            return _full(con, day, task, applied, str(why), previous)
    finally:
        con.close()
    return _report(c, applied, day, ingested, to)


def _apply_shared(task: RefreshTask, shared: SharedChanges) -> RefreshReport:
    """A serving host's refresh: the refresh host's difference and publication record."""
    c = refresh_in_place(
        None,
        shared.as_of,
        task.online,
        task.secret,
        lambda _query: shared.rows,
        Sharing(made=shared.made),
    )
    c.recomputed = 0  # the refresh host recomputed; this host only writes
    return _report(c, [], shared.as_of, 0.0, None)


def _catch_up(task: RefreshTask) -> RefreshReport:
    """Apply, in order, every day folder under ``task.how.changes`` from this host's
    publication to the refresh host's latest (none: the current publication, unchanged)."""
    current = plan(task.online)
    days = days_to_apply(task.how.changes, current["publication"])
    if not days:
        meta = describe_current(task.online)
        households = int(meta.get("households", 0))
        day = date.fromisoformat(current["as_of"])
        return RefreshReport([], day, current["publication"], households, kind="unchanged")
    reports = []
    for folder in days:
        before = plan(task.online)["publication"]
        reports.append(_apply_shared(task, read_changes(folder, before, None)))
    last = reports[-1]
    last.caught_up = [r.as_of for r in reports]
    return last


def _report(c: Changes, applied: list[date], day: date, ingested: float, shared) -> RefreshReport:
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
        shared=shared,
    )


def _recompute(task: RefreshTask, con, day: date):
    """The :data:`online_store.incremental.Recompute` for ``task.how`` (None: DuckDB)."""
    how = task.how
    if how.changes is not None:
        before = plan(task.online)["publication"]
        return lambda _query: read_changes(how.changes, before, day).rows
    if how.engine == "spark":
        tables = task.warehouse.with_suffix(".tables")
        export_tables(con, tables)  # what Spark reads: every table and its history
        return spark_recompute(spark_session(how.spark_master, "credref refresh"), str(tables))
    return None


def _full(con, day: date, task: RefreshTask, applied: list[date], why: str, previous):
    meta = publish(con, day, task.online, task.secret)
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
