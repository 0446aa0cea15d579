"""The daily refresh of the online store in place: only the households whose answer
inputs changed are written.

What a publication holds is a function of the warehouse as known on a day K and of the
as-of date D (:func:`features.pit.publication_sql`); the warehouse keeps every version
of every record (``records.versions``), so the current publication can be recomputed
exactly from its ledger line (as of D0, as known at K0). The refresh to day D:

1. picks the candidates: the households with a version of any record learnt since K0,
   and those with a record date the calendar crosses between D0 and D through the
   feature SQL's windows (``features.pit.CALENDAR_DATES``). No other household's row can
   differ, so the day's cost follows the day's changes, not the register. It computes,
   in DuckDB, their rows as of D as known now, compares them with theirs in the current
   publication's mirror (``rows-<publication>.parquet``), and writes the next mirror:
   the current one with their rows replaced. When the reporting calendar moves (a
   1 January or 1 July between D0 and D) or there is no mirror, every row is computed
   and compared (with the mirror, or the current publication recomputed as of D0 as
   known at K0). Either way it keeps the households that differ: added, removed (a
   registration entered in error), a different status, feature or anchor, or a household
   record version learnt since K0 (so every change of the fields verification hashes is
   covered);
2. hashes those households' personal fields and, in one SQLite write transaction,
   replaces their rows, deletes the removed and moves the metadata to the new
   publication. Readers keep the previous publication until the commit (WAL), and a
   refresh killed before it leaves the previous publication whole; a rerun recomputes
   the same difference and completes.

The four calendar-derived features are stored as anchors (``features.elapsed``), so the
calendar alone rewrites only the households whose windows or publicity it closes. A
publication of another layout or catalogue cannot be refreshed in place: the caller
rebuilds it (:func:`online_store.publish.publish`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path

import duckdb
import pyarrow as pa

from features.catalogue import FEATURES_BY_NAME, catalogue_version
from features.elapsed import ELAPSED
from features.pit import calendar_moved_sql, publication_sql, reporting_calendar
from online_store.changes import StaleChanges, write_changes
from online_store.publish import (
    keep_only_mirror,
    mirror_path,
    publication_meta,
    record_in_ledger,
    rows_of,
    write_mirror,
)
from online_store.reader import ANCHORS, CURRENT, LAYOUT, STORED_FEATURES
from online_store.verification import FieldHasher
from records.changeset import knowledge_date
from records.versions import learnt_since_sql

logger = logging.getLogger(__name__)

_COMPARED = ("status", *STORED_FEATURES, *ANCHORS)
_BATCH_ROWS = 50_000


class NotIncremental(RuntimeError):
    """The current publication cannot be refreshed in place (the reason says why)."""


@dataclass
class Changes:
    """What one refresh rewrote, against the publication it replaced."""

    publication: str
    previous: str
    households: int
    meta: dict = field(default_factory=dict)  # the publication's record (its ledger line)
    rewritten: int = 0
    added: int = 0
    removed: int = 0
    status_changed: int = 0
    records_learnt: int = 0  # households with a record version learnt since the last one
    recomputed: int = 0  # households whose row was recomputed to compare (all, or candidates)
    seconds: dict[str, float] = field(default_factory=dict)  # by step, for the log and bench
    by_column: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)


def _reason(column: str) -> str:
    """A changed column's reason code (its feature's, an anchor's feature's), else itself."""
    name = next((e.name for e in ELAPSED if e.anchor == column), column)
    feature = FEATURES_BY_NAME.get(name)
    return (feature.reason if feature else None) or column


@dataclass(frozen=True)
class Step:
    """One refresh's move, the value every part of it is handed: from the current
    publication (``publication``, as of ``before``, as known at ``known_through``) to
    the publication of ``as_of`` as known now."""

    publication: str
    before: date
    known_through: date
    as_of: date

    @classmethod
    def from_meta(cls, meta: dict, as_of: date) -> Step:
        """The step from the publication ``meta`` describes (its ``meta`` table) to ``as_of``."""
        return cls(
            meta["publication"],
            date.fromisoformat(meta["as_of"]),
            date.fromisoformat(meta["known_through"]),
            as_of,
        )


def _previous(store: sqlite3.Connection, warehouse: duckdb.DuckDBPyConnection | None) -> dict:
    """The current publication's record, if it can be refreshed in place (``warehouse``
    None: by a difference shared with its publication's record, checked by its counts)."""
    meta = dict(store.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("layout") != LAYOUT:
        raise NotIncremental("the current publication has an older layout")
    if meta.get("catalogue_version") != catalogue_version():
        raise NotIncremental("the current publication holds another feature catalogue")
    if not meta.get("known_through"):
        raise NotIncremental("the current publication does not say what it knew")
    if warehouse is None:
        return meta
    known = knowledge_date(warehouse)
    if known is None or known < date.fromisoformat(meta["known_through"]):
        raise NotIncremental("the warehouse knows less than the current publication")
    return meta


@dataclass(frozen=True)
class DiffQuery:
    """The store's rows of every household whose row differs between the publication
    ``step`` leaves (as known then) and the one it makes (as known now), with ``changed``
    naming what differs (comma-separated); a removed household has no status. Three
    parts: the two publications (``new``, ``old``, each a query with its own WITH list)
    and the difference over relations named ``n`` and ``o`` (``diff``). DuckDB runs
    :meth:`sql`, one statement, usually over stand-ins for the two publications (the
    mirror's rows, the candidates' rows), so each part is built only when read; Spark
    (whose parser cannot hold two nested WITH lists with the same names) registers ``n``
    and ``o`` as views and runs ``diff``."""

    step: Step

    @cached_property
    def new(self) -> str:
        return publication_sql(self.step.as_of, identity=False)

    @cached_property
    def old(self) -> str:
        return publication_sql(self.step.before, self.step.known_through, identity=False)

    @cached_property
    def diff(self) -> str:
        return _diff_sql(self.step.known_through)

    def sql(self, new: str | None = None, old: str | None = None) -> str:
        """One statement, over ``new`` and ``old`` where given (else the publications)."""
        return f"WITH n AS ({new or self.new}), o AS ({old or self.old}),{self.diff}"


def _diff_sql(known_through: date) -> str:
    cols = ", ".join(f"n.{c}" for c in _COMPARED)
    differs = ", ".join(f"CASE WHEN n.{c} IS DISTINCT FROM o.{c} THEN '{c}' END" for c in _COMPARED)
    k = f"DATE '{known_through.isoformat()}'"
    diff = f"""
    learnt AS (
        SELECT uscc FROM households WHERE known_from > {k}
        UNION SELECT uscc FROM households_history WHERE known_to > {k}
    ),
    d AS (
        SELECT COALESCE(n.uscc, o.uscc) AS uscc, {cols},
               o.uscc IS NULL AS added,
               n.uscc IS NULL AS removed,
               l.uscc IS NOT NULL AS learnt,
               concat_ws(',', {differs}) AS changed
        FROM n FULL JOIN o ON o.uscc = n.uscc
        LEFT JOIN learnt l ON l.uscc = COALESCE(n.uscc, o.uscc)
    )
    SELECT d.*, h.name, h.operator_name, h.operator_id_hmac, h.address
    FROM d LEFT JOIN households h ON h.uscc = d.uscc AND NOT d.removed
    WHERE d.added OR d.removed OR d.learnt OR d.changed <> ''
    """
    return diff


#: Runs the difference query and returns its rows: DuckDB by default,
#: Spark for a national register (:mod:`online_store.spark_refresh`).
Recompute = Callable[[DiffQuery], pa.Table]


def plan(root: Path) -> dict:
    """What a refresh of the current publication starts from (for a recomputation run
    elsewhere, e.g. ``spark-submit online_store/spark_refresh.py``)."""
    path = root / CURRENT
    if not path.exists():
        raise NotIncremental("nothing is published yet")
    store = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(store.execute("SELECT key, value FROM meta").fetchall())
    finally:
        store.close()
    return {k: meta.get(k, "") for k in ("publication", "as_of", "known_through", "layout")}


def _parquet(path: Path) -> str:
    return f"SELECT * FROM read_parquet('{path.as_posix()}')"


#: The relation a refresh's candidate households are registered under in DuckDB.
CANDIDATES = "refresh_candidates"


def candidates(warehouse: duckdb.DuckDBPyConnection, step: Step) -> pa.Table | None:
    """The households whose row can differ between the current publication and the
    step's: a record of theirs learnt since it was made, or a date of theirs the
    calendar crosses (``features.pit.CALENDAR_DATES``). ``None`` when the reporting
    calendar moves between the two days: then every row may change."""
    day, as_of = step.before, step.as_of
    if day > as_of or _reporting_calendar(warehouse, day) != _reporting_calendar(warehouse, as_of):
        return None
    sql = f"{calendar_moved_sql(day, as_of)}\n    UNION {learnt_since_sql(step.known_through)}"
    return warehouse.sql(sql).to_arrow_table()


def _reporting_calendar(warehouse: duckdb.DuckDBPyConnection, day: date) -> tuple:
    return tuple(warehouse.execute(reporting_calendar(day)).fetchall()[0])


@dataclass
class DuckDBRecompute:
    """DuckDB's way, with the current publication's mirror: only the candidates'
    rows (:func:`candidates`) recomputed and compared with theirs in the mirror, and
    the mirror with those rows replaced written to ``new_rows`` (tomorrow's). Without a
    mirror, or when the reporting calendar moves, every row: the day's written to
    ``new_rows`` and compared with the mirror, or with the current publication
    recomputed from the history (as of its day, as known then)."""

    warehouse: duckdb.DuckDBPyConnection
    root: Path
    step: Step
    new_rows: Path
    #: households whose row was recomputed (None: every one)
    recomputed: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def __call__(self, q: DiffQuery) -> pa.Table:
        mirror = mirror_path(self.root, self.step.publication)
        started = time.perf_counter()
        some = candidates(self.warehouse, self.step) if mirror.exists() else None
        self.seconds["candidates"] = round(time.perf_counter() - started, 2)
        if some is not None:
            self.recomputed = some.num_rows
            return _recompute_candidates(
                self.warehouse, q, some, mirror, self.new_rows, self.seconds
            )
        write_mirror(self.warehouse, q.new, self.new_rows)
        old = _parquet(mirror) if mirror.exists() else q.old
        if not mirror.exists():
            logger.info("no mirror of %s: recomputing it from the history", mirror.name)
        return self.warehouse.sql(q.sql(_parquet(self.new_rows), old)).to_arrow_table()


def _recompute_candidates(
    warehouse,
    q: DiffQuery,
    some: pa.Table,
    mirror: Path,
    new_rows: Path,
    seconds: dict[str, float],
) -> pa.Table:
    day_rows = new_rows.with_name(f"{new_rows.stem}-day.parquet")
    warehouse.register(CANDIDATES, some)
    try:
        t = time.perf_counter()
        their_rows = publication_sql(q.step.as_of, identity=False, only=CANDIDATES)
        write_mirror(warehouse, their_rows, day_rows)
        seconds["their_rows"] = round(time.perf_counter() - t, 2)
        mine = f"uscc IN (SELECT uscc FROM {CANDIDATES})"
        # tomorrow's mirror: everyone else's rows as they were, and the candidates' new ones
        t = time.perf_counter()
        write_mirror(
            warehouse,
            f"{_parquet(mirror)} WHERE NOT {mine} UNION ALL {_parquet(day_rows)}",
            new_rows,
        )
        seconds["next_mirror"] = round(time.perf_counter() - t, 2)
        old = f"{_parquet(mirror)} WHERE {mine}"
        changed = warehouse.sql(q.sql(_parquet(day_rows), old)).to_arrow_table()
    finally:
        warehouse.unregister(CANDIDATES)
        day_rows.unlink(missing_ok=True)
    logger.info("%s candidates recomputed, %s rows differ", some.num_rows, changed.num_rows)
    return changed


@dataclass(frozen=True)
class Sharing:
    """How a refresh's difference travels between hosts: ``to`` a folder for the serving
    hosts (the refresh host's side), or the publication record ``made`` by the refresh
    host that shared it (a serving host's side: it publishes that same publication)."""

    to: Path | None = None
    made: dict | None = None


def refresh_in_place(
    warehouse: duckdb.DuckDBPyConnection | None,
    as_of: date,
    root: Path,
    secret: bytes,
    recompute: Recompute | None = None,
    sharing: Sharing = Sharing(),
) -> Changes:
    """Bring the current publication to ``as_of`` by rewriting only what changed
    (``warehouse`` None: applying a difference shared with its publication's record)."""
    path = root / CURRENT
    if not path.exists():
        raise NotIncremental("nothing is published yet")
    store = sqlite3.connect(path, isolation_level=None)
    new_rows = root / f".rows-{uuid.uuid4().hex}.parquet"
    try:
        store.execute("PRAGMA busy_timeout = 10000")
        step = Step.from_meta(_previous(store, warehouse), as_of)
        run = recompute or DuckDBRecompute(warehouse, root, step, new_rows)
        started = time.perf_counter()
        differ = run(DiffQuery(step))
        compared = time.perf_counter()
        changes = _apply(store, warehouse, differ, step, root, secret, sharing.made)
        changes.recomputed = getattr(run, "recomputed", None) or changes.households
        changes.seconds = {
            **getattr(run, "seconds", {}),
            "recompute": round(compared - started, 2),  # the steps above included
            "write": round(time.perf_counter() - compared, 2),
        }
        if new_rows.exists():  # committed: the day's rows are the next refresh's mirror
            os.replace(new_rows, mirror_path(root, changes.publication))
        if sharing.to is not None:  # after the commit: only a publication made is shared
            write_changes(sharing.to, differ, step.publication, changes.meta, FieldHasher(secret))
    finally:
        store.close()
        new_rows.unlink(missing_ok=True)
    keep_only_mirror(
        root, changes.publication if mirror_path(root, changes.publication).exists() else None
    )
    checkpoint = time.perf_counter()
    _checkpoint(path)
    changes.seconds["checkpoint"] = round(time.perf_counter() - checkpoint, 2)
    logger.info(
        "refreshed %s to %s: %s households rewritten",
        step.publication,
        as_of,
        changes.rewritten,
    )
    return changes


def _apply(store, warehouse, changed, step: Step, root: Path, secret: bytes, made: dict | None):
    """One write transaction: changed rows replaced, removed ones deleted, metadata moved
    (to the publication ``made`` by the refresh host, when given; refused if this store
    then holds other counts than it did)."""
    removed_mask = changed.column("removed").to_pylist()
    removed = [
        u for u, r in zip(changed.column("uscc").to_pylist(), removed_mask, strict=True) if r
    ]
    # typed: a quiet day's empty list would otherwise be a null-typed array, which
    # Arrow refuses as a filter (the refresh then failed on every day with nothing to do)
    kept = changed.filter(pa.array([not r for r in removed_mask], pa.bool_()))
    hasher = FieldHasher(secret)
    insert = f"INSERT OR REPLACE INTO subjects VALUES ({', '.join('?' * (len(_COMPARED) + 5))})"
    store.execute("BEGIN IMMEDIATE")
    try:
        for batch in kept.to_batches(_BATCH_ROWS):
            store.executemany(insert, rows_of(batch, hasher))
        store.executemany("DELETE FROM subjects WHERE uscc = ?", ((u,) for u in removed))
        households, operating = store.execute(
            f"SELECT count(*), count({STORED_FEATURES[0]}) FROM subjects"
        ).fetchone()
        meta = _meta(warehouse, step.as_of, made, households=households, operating=operating)
        record_in_ledger(root, meta)  # before the commit: every answer given can replay
        store.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
        store.execute("COMMIT")
    except BaseException:
        store.execute("ROLLBACK")
        raise
    return _summarise(changed.to_pydict(), meta, step.publication, households)


def _meta(warehouse, as_of: date, made: dict | None, **counts: int) -> dict:
    """The new publication's record: this warehouse's, or the one the refresh host made,
    which a store that drifted from the refresh host's cannot take."""
    if made is None:
        return publication_meta(warehouse, as_of, **counts)
    if made["as_of"] != as_of.isoformat() or any(made[k] != str(v) for k, v in counts.items()):
        raise StaleChanges(
            f"after applying the changes this host's publication holds {counts}, the refresh "
            f"host's {made['publication']} { ({k: made[k] for k in counts}) }: copy the refresh "
            "host's publication to this host"
        )
    return made


def _summarise(rows: dict, meta: dict, previous: str, households: int) -> Changes:
    """Counts of what changed; by column and reason only for households in both, and a
    status change as itself (the features of a household leaving operation all go)."""
    by_column: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for changed, added, removed in zip(
        rows["changed"], rows["added"], rows["removed"], strict=True
    ):
        cols = changed.split(",") if changed else []
        if added or removed:
            continue
        if "status" in cols:  # leaving or re-entering operation changes every feature
            cols = ["status"]
        by_column.update(cols)
        by_reason.update({_reason(c) for c in cols})
    return Changes(
        publication=meta["publication"],
        meta=meta,
        previous=previous,
        households=households,
        rewritten=len(rows["uscc"]),
        added=sum(rows["added"]),
        removed=sum(rows["removed"]),
        status_changed=by_column.get("status", 0),
        records_learnt=sum(rows["learnt"]),
        by_column=dict(by_column),
        by_reason=dict(by_reason),
    )


def _checkpoint(path: Path) -> None:
    """Fold the WAL back into the file once readers have moved on (best effort: a reader
    still on the previous publication only delays it to the next refresh)."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA busy_timeout = 2000")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
