"""What the calendar alone moves between two publications: every comparison of a record
date with the as-of date is listed (``features.pit.CALENDAR_DATES``), the households
it names are the only ones whose rows differ, and a publication cut to some households
is the full one's rows for them."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from features.pit import CALENDAR_DATES, calendar_moved_sql, publication_sql, reporting_calendar

T = date(2031, 7, 15)  # a day no record carries, so its literal marks the as-of date


def _mentions_t(node: exp.Expression) -> bool:
    return any(isinstance(n, exp.Literal) and n.this == T.isoformat() for n in node.walk())


def _window(side: exp.Expression) -> str:
    return " ".join(f"{i.this.name} {i.unit.name}" for i in side.find_all(exp.Interval))


def _comparisons_with_t() -> tuple[set[tuple[str, str]], list[str]]:
    """(column, window) of every comparison of a column with T or T - window, and the
    text of those that reach T through its year (the reporting calendar)."""
    tree = sqlglot.parse_one(publication_sql(T, identity=False), read="duckdb")
    direct, through_year = set(), []
    for cmp in tree.find_all(exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ, exp.Between):
        sides = [cmp.this, *(cmp.args[k] for k in ("expression", "low", "high") if k in cmp.args)]
        with_t = [s for s in sides if _mentions_t(s)]
        if not with_t:
            continue
        if any(_mentions_t(y) for s in with_t for y in s.find_all(exp.Year)):
            through_year.append(cmp.sql())
            continue
        window = _window(with_t[0])
        for side in sides:
            if not _mentions_t(side):
                direct |= {(c.name, window) for c in side.find_all(exp.Column)}
    return direct, through_year


def test_every_comparison_of_a_record_date_with_the_as_of_date_is_listed():
    direct, through_year = _comparisons_with_t()
    listed = {(c, w) for cols in CALENDAR_DATES.values() for c, ws in cols.items() for w in ws}
    assert direct, "the SQL compares no record with T: the search is broken"
    assert direct <= listed, sorted(direct - listed)
    assert through_year  # the reporting calendar's comparisons, moved for everyone at once


def _calendar(con, day: date) -> tuple:
    return tuple(con.execute(reporting_calendar(day)).fetchall()[0])


def test_the_reporting_calendar_moves_on_1_january_and_1_july_only(small_warehouse):
    con = duckdb.connect(str(small_warehouse), read_only=True)
    day, moves = date(2024, 1, 1), []
    while day < date(2026, 1, 2):
        if _calendar(con, day - timedelta(days=1)) != _calendar(con, day):
            moves.append((day.month, day.day))
        day += timedelta(days=1)
    assert moves == [(1, 1), (7, 1)] * 2 + [(1, 1)]


@pytest.fixture(scope="module")
def warehouse(small_warehouse):
    con = duckdb.connect(str(small_warehouse), read_only=True)
    yield con
    con.close()


def _rows(con, as_of: date, only: str | None = None) -> dict[str, tuple]:
    rows = con.sql(publication_sql(as_of, identity=False, only=only)).fetchall()
    return {r[0]: r for r in rows}


# Pairs within one reporting half-year (1 January to 30 June, 1 July to 31 December),
# the domain's last three years, one day to four months apart.
_pairs = st.tuples(st.dates(date(2023, 7, 1), date(2026, 6, 30)), st.integers(1, 120)).filter(
    lambda p: (p[0].month, p[0].day) <= (6, 30) or (p[0] + timedelta(days=p[1])).year == p[0].year
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pair=_pairs)
def test_between_two_days_only_the_households_it_names_move(warehouse, pair):
    before, gap = pair
    after = before + timedelta(days=gap)
    if _calendar(warehouse, before) != _calendar(warehouse, after):
        return  # the pair crosses 1 July: everyone may move, nothing to check
    old, new = _rows(warehouse, before), _rows(warehouse, after)
    moved = {u for u in old.keys() | new.keys() if old.get(u) != new.get(u)}
    named = {r[0] for r in warehouse.sql(calendar_moved_sql(before, after)).fetchall()}
    assert moved, (before, after)  # something moves in a domain this size: the check bites
    assert moved <= named, sorted(moved - named)[:5]
    assert len(named) < len(new)  # and it names fewer than everyone


@pytest.mark.parametrize("known_at", [None, date(2025, 12, 31)])
def test_a_publication_cut_to_some_households_is_the_full_ones_rows_for_them(warehouse, known_at):
    as_of = date(2025, 12, 31)
    full = {r[0]: r for r in warehouse.sql(publication_sql(as_of, known_at, False)).fetchall()}
    some = [*sorted(full)[::7], "not-a-household"]
    warehouse.register("some_households", pa.table({"uscc": some}))
    try:
        cut = warehouse.sql(publication_sql(as_of, known_at, False, "some_households")).fetchall()
    finally:
        warehouse.unregister("some_households")
    assert {r[0]: r for r in cut} == {u: full[u] for u in some if u in full}
