"""The feed: when each version of each simulated record reached the credit system.

The simulation (``synth.records``) gives every record its final content. Here each
record becomes the versions the credit system saw, each with ``known_from`` and
``known_to`` (``records.versions``):

- **Lifecycle.** A record is first known without what happened to it later: a penalty
  before its repair or withdrawal, a marking before its restoration, a listing before
  its removal, a household before its exit, a late annual report as a due row before
  it was filed. The later fact is a new version known from its own date.
- **Late entries** [assumption]: 4% of versions reach the system 1-60 days after their
  date (geometric, mean 10 days).
- **Corrections** [assumption]: 2% of penalties are first entered with an error (a fine
  keyed ten times too high or low, a wrong violation type, a decision date some days
  early) and corrected 1-60 days later (mean 7).
- **Records entered in error** [assumption]: 0.5% of penalties are entered twice under a
  mistyped decision number, and 0.3% of markings twice, the copy for the wrong day and
  cause; each copy is deleted 1-60 days later (mean 10).

Every draw comes from a separate seeded stream and none depends on the frailty, so the
simulated truth and the oracle are those of the final records, exactly. A record's
versions are never known before its household's first version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from records.schema import TABLES_BY_NAME, VIOLATION_TYPES, Table
from records.versions import KNOWN_FROM, KNOWN_TO

LATE_SHARE = 0.04
LATE_MEAN_DAYS = 10.0
CORRECTION_SHARE = 0.02
CORRECTION_MEAN_DAYS = 7.0
DOUBLE_ENTRY_SHARE = 0.005
SPURIOUS_MARKING_SHARE = 0.003
DELETION_MEAN_DAYS = 10.0
MAX_DELAY_DAYS = 60
NULL_DAY = np.iinfo(np.int64).max  # known_to of a version still current


@dataclass(frozen=True)
class Stage:
    """A later fact: the columns it sets, their value before it, and its date column."""

    date_columns: tuple[str, ...]  # the fact's date: the first of these that is set
    before: dict[str, object]  # column -> value before the fact
    applies: str = "true"  # SQL over the final row: the fact is a later version at all


STAGES: dict[str, Stage] = {
    "households": Stage(
        ("status_changed_on",),
        {"status": "operating", "status_changed_on": None, "status_reason": None},
    ),
    "penalties": Stage(
        ("repaired_on", "withdrawn_on"), {"repaired_on": None, "withdrawn_on": None}
    ),
    "abnormal_status": Stage(("restored_on",), {"restored_on": None, "restore_reason": None}),
    "serious_dishonesty": Stage(("removed_on",), {"removed_on": None}),
    "annual_reports": Stage(
        ("filed_on",),
        {
            "filed_on": None,
            "published": False,
            "employees": None,
            "revenue_yuan": None,
            "has_online_shop": None,
        },
        applies="filed_on > make_date(report_year + 1, 6, 30)",
    ),
}


def _days(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Dates as day numbers; nulls as NULL_DAY."""
    ints = pc.fill_null(pc.cast(a, pa.int32()), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    mask = pc.is_null(a).to_numpy(zero_copy_only=False)
    return np.where(mask, NULL_DAY, ints)


def _dates(days: np.ndarray) -> pa.Array:
    mask = days == NULL_DAY
    return pa.array(np.where(mask, 0, days).astype(np.int32), mask=mask).cast(pa.date32())


def _sql_days(table: pa.Table, expr: str) -> np.ndarray:
    con = duckdb.connect()
    con.register("r", table)
    out = con.sql(f"SELECT ({expr}) AS d FROM r").to_arrow_table().column(0)
    con.close()
    if out.type == pa.bool_():
        return out.fill_null(False).to_numpy(zero_copy_only=False)
    return _days(out)


def _set(table: pa.Table, values: dict[str, object], rows: np.ndarray) -> pa.Table:
    """``table`` with ``values`` written into ``rows`` (a boolean mask)."""
    mask = pa.array(rows)
    for name, value in values.items():
        i = table.schema.get_field_index(name)
        col = table.column(i).combine_chunks()
        fill = pa.scalar(value, col.type) if value is not None else pa.nulls(1, col.type)[0]
        table = table.set_column(i, table.schema.field(i), pc.if_else(mask, fill, col))
    return table


def _delay(rng: np.random.Generator, n: int, share: float, mean: float) -> np.ndarray:
    hit = rng.random(n) < share
    lag = np.minimum(rng.geometric(1.0 / mean, n), MAX_DELAY_DAYS)
    return np.where(hit, lag, 0)


@dataclass
class _Versions:
    """Versions of one table under construction: rows and their knowledge interval."""

    schema: pa.Schema
    rows: list[pa.Table]
    start: list[np.ndarray]
    end: list[np.ndarray]

    def add(self, rows: pa.Table, start: np.ndarray, end: np.ndarray, keep: np.ndarray) -> None:
        idx = np.flatnonzero(keep)
        self.rows.append(rows.take(idx).cast(self.schema))
        self.start.append(start[idx])
        self.end.append(end[idx])

    def table(self) -> pa.Table:
        t = pa.concat_tables(self.rows)
        t = t.append_column(KNOWN_FROM, _dates(np.concatenate(self.start)))
        return t.append_column(KNOWN_TO, _dates(np.concatenate(self.end)))


def record_versions(
    t: Table, final: pa.Table, not_before: np.ndarray, rng: np.random.Generator
) -> pa.Table:
    """Every version of ``final``'s records, with ``known_from`` and ``known_to``.

    ``not_before``: per row, the day its household was first known."""
    n = final.num_rows
    stage = STAGES.get(t.name)
    first, start = final, _sql_days(final, t.known_since)
    two = np.zeros(n, bool)
    fact_day = np.full(n, NULL_DAY)
    if stage is not None:
        reset = _set(final, stage.before, np.ones(n, bool))
        fact_day = _sql_days(final, f"COALESCE({', '.join(stage.date_columns)})")
        reset_start = _sql_days(reset, t.known_since)
        applies = _sql_days(final, stage.applies).astype(bool)
        two = applies & (fact_day != NULL_DAY) & (fact_day > reset_start)
        start = np.where(two, reset_start, start)
    start = np.maximum(start + _delay(rng, n, LATE_SHARE, LATE_MEAN_DAYS), not_before)
    fact = np.where(two, fact_day + _delay(rng, n, LATE_SHARE, LATE_MEAN_DAYS), NULL_DAY)
    two &= fact > start  # a fact that reaches the system with the record is one version
    if stage is not None:
        first = _set(final, stage.before, two)
    out = _Versions(final.schema, [], [], [])
    first_end = np.where(two, fact, NULL_DAY)
    if t.name == "penalties":
        start = _corrections(out, first, start, first_end, rng)
    out.add(first, start, first_end, start < first_end)
    out.add(final, fact, np.full(n, NULL_DAY), two)
    if t.name in ERRORS:
        ERRORS[t.name](out, final, start, rng)
    return out.table()


def _corrections(
    out: _Versions, first: pa.Table, start: np.ndarray, end: np.ndarray, rng
) -> np.ndarray:
    """Add the erroneous first versions of corrected penalties; returns the start day of
    the corrected (true) first versions."""
    n = first.num_rows
    hit = rng.random(n) < CORRECTION_SHARE
    which = rng.integers(0, 3, n)
    fine = pc.cast(first.column("fine_yuan"), pa.float64()).to_numpy(zero_copy_only=False)
    which = np.where((which == 0) & ~(np.nan_to_num(fine) > 0), 1, which)  # no fine to mistype
    fixed = np.minimum(start + _delay(rng, n, 1.0, CORRECTION_MEAN_DAYS), end)
    wrong = first
    factor = np.where(rng.random(n) < 0.5, 10.0, 0.1)
    wrong = wrong.set_column(
        wrong.schema.get_field_index("fine_yuan"),
        "fine_yuan",
        pa.array(
            np.where(hit & (which == 0), np.round(fine * factor, 2), fine), mask=np.isnan(fine)
        ),
    )
    types = np.array(VIOLATION_TYPES, dtype=object)
    index = {v: i for i, v in enumerate(VIOLATION_TYPES)}
    vt_index = np.fromiter((index[v] for v in first.column("violation_type").to_pylist()), int, n)
    other = types[(vt_index + rng.integers(1, len(types), n)) % len(types)]  # never the same
    wrong = wrong.set_column(
        wrong.schema.get_field_index("violation_type"),
        "violation_type",
        pa.array(np.where(hit & (which == 1), other, types[vt_index]), pa.string()),
    )
    decided = _days(first.column("decided_on"))
    early = decided - rng.integers(1, 11, n)
    wrong = wrong.set_column(
        wrong.schema.get_field_index("decided_on"),
        "decided_on",
        _dates(np.where(hit & (which == 2), early, decided)),
    )
    out.add(wrong, start, fixed, hit & (fixed > start))
    return np.where(hit, fixed, start)


def _double_entries(out: _Versions, final: pa.Table, start: np.ndarray, rng) -> None:
    n = final.num_rows
    hit = rng.random(n) < DOUBLE_ENTRY_SHARE
    copy = final.set_column(
        final.schema.get_field_index("decision_no"),
        "decision_no",
        pc.binary_join_element_wise(final.column("decision_no"), pa.scalar("E"), ""),
    )
    copy = _set(copy, {"repaired_on": None, "withdrawn_on": None}, np.ones(n, bool))
    begin = start + rng.integers(0, 4, n)
    out.add(copy, begin, begin + _delay(rng, n, 1.0, DELETION_MEAN_DAYS), hit)


def _spurious_markings(out: _Versions, final: pa.Table, start: np.ndarray, rng) -> None:
    """A marking keyed for the wrong day: an "unreachable" copy a few days on, deleted."""
    n = final.num_rows
    hit = rng.random(n) < SPURIOUS_MARKING_SHARE
    shift = rng.integers(1, 6, n)
    copy = final.set_column(
        final.schema.get_field_index("marked_on"),
        "marked_on",
        _dates(_days(final.column("marked_on")) + shift),
    )
    copy = copy.set_column(
        copy.schema.get_field_index("cause"), "cause", pa.array(["unreachable"] * n, pa.string())
    )
    copy = _set(copy, {"restored_on": None, "restore_reason": None}, np.ones(n, bool))
    hit &= ~_collides(copy, final, TABLES_BY_NAME["abnormal_status"].key)
    begin = start + shift
    out.add(copy, begin, begin + _delay(rng, n, 1.0, DELETION_MEAN_DAYS), hit)


ERRORS: dict[str, Callable] = {
    "penalties": _double_entries,
    "abnormal_status": _spurious_markings,
}


def chunk_versions(tables: dict[str, pa.Table], rng: np.random.Generator) -> dict[str, pa.Table]:
    """Versions of every record table of one chunk (households first: the others are
    never known before their household)."""
    hh = tables["households"]
    hh_versions = record_versions(
        TABLES_BY_NAME["households"], hh, np.zeros(hh.num_rows, np.int64), rng
    )
    first = _first_known(hh_versions)
    out = {"households": hh_versions}
    for name, final in tables.items():
        if name == "households" or name not in TABLES_BY_NAME:
            continue
        not_before = _lookup(first, final.column("uscc"))
        out[name] = record_versions(TABLES_BY_NAME[name], final, not_before, rng)
    return out


def _first_known(hh_versions: pa.Table) -> dict[str, int]:
    codes = hh_versions.column("uscc").to_pylist()
    days = _days(hh_versions.column(KNOWN_FROM))
    first: dict[str, int] = {}
    for c, d in zip(codes, days, strict=True):
        first[c] = min(first.get(c, d), d)
    return first


def _lookup(first: dict[str, int], codes: pa.ChunkedArray) -> np.ndarray:
    return np.fromiter((first[c] for c in codes.to_pylist()), np.int64, len(codes))


def known_at_day(versions: pa.Table, day: int, history: bool) -> pa.Table:
    """The versions known at the end of ``day``: a plain export (record columns only) or,
    with ``history``, every version known by then with its knowledge interval."""
    start = _days(versions.column(KNOWN_FROM))
    end = _days(versions.column(KNOWN_TO))
    if not history:
        keep = (start <= day) & (end > day)
        return versions.filter(pa.array(keep)).drop_columns([KNOWN_FROM, KNOWN_TO])
    keep = start <= day
    t = versions.filter(pa.array(keep))
    end = np.where(end[keep] > day, NULL_DAY, end[keep])
    return t.set_column(t.schema.get_field_index(KNOWN_TO), KNOWN_TO, _dates(end))


def feed_part(versions: pa.Table, day: int) -> pa.Table:
    """The versions a feed starting after ``day`` needs: known, or closed, after it."""
    start = _days(versions.column(KNOWN_FROM))
    end = _days(versions.column(KNOWN_TO))
    return versions.filter(pa.array((start > day) | ((end != NULL_DAY) & (end > day))))


def day_changes(versions: pa.Table, t: Table, day: int) -> tuple[pa.Table, pa.Table]:
    """One day's change set for ``t``: the versions that became known on ``day``, and the
    keys of records deleted that day (closed without a successor)."""
    start = _days(versions.column(KNOWN_FROM))
    end = _days(versions.column(KNOWN_TO))
    rows = versions.filter(pa.array(start == day)).drop_columns([KNOWN_FROM, KNOWN_TO])
    closed = versions.filter(pa.array(end == day)).select(list(t.key))
    if rows.num_rows and closed.num_rows:
        succeeded = rows.select(list(t.key))
        closed = _anti(closed, succeeded, t.key)
    return rows, closed


def _collides(rows: pa.Table, others: pa.Table, keys: tuple[str, ...]) -> np.ndarray:
    """Per row of ``rows``: its key is also a key of ``others``."""
    marked = others.select(list(keys)).append_column("_hit", pa.array([True] * others.num_rows))
    hits = rows.select(list(keys)).append_column("_i", pa.array(np.arange(rows.num_rows)))
    joined = hits.join(marked, list(keys), join_type="inner")
    out = np.zeros(rows.num_rows, bool)
    out[joined.column("_i").to_numpy()] = True
    return out


def _anti(left: pa.Table, right: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """Rows of ``left`` whose key is not in ``right``."""
    return left.filter(pa.array(~_collides(left, right, keys)))
