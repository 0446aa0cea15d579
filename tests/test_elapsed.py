"""The calendar-derived features: their SQL (snapshots) and Python (online store) renderings
give the same value, and a publication's derived features equal the snapshot's."""

from __future__ import annotations

import random
from datetime import date, timedelta

import duckdb
import pytest

from features.elapsed import CALENDAR, DERIVED, ELAPSED
from features.pit import feature_sql
from online_store.publish import publish
from online_store.reader import OnlineStore
from tests.helpers import SECRET

DAYS = [date(2022, 1, 1) + timedelta(days=i) for i in range(4 * 366)]


def test_the_report_calendar_is_the_same_in_sql_and_python_on_every_day():
    con = duckdb.connect()
    t = "d"
    got = dict(
        con.execute(
            f"SELECT d, {CALENDAR.sql(t)} FROM unnest($1::DATE[]) AS u(d)", [DAYS]
        ).fetchall()
    )
    assert {d: CALENDAR.value(d) for d in DAYS} == got
    # the whole cycle, day by day: 1 on 1 August, 365 or 366 on 31 July
    assert {CALENDAR.value(d) for d in DAYS} == set(range(1, 367))


@pytest.mark.parametrize("feature", ELAPSED, ids=lambda e: e.name)
def test_elapsed_features_are_the_same_in_sql_and_python(feature):
    rng = random.Random(7)
    pairs = [(rng.choice(DAYS) - timedelta(days=rng.randint(0, 4000)), rng.choice(DAYS))]
    pairs += [
        (d - timedelta(days=k), d) for d in DAYS[::97] for k in (0, 1, 364, 365, 1094, 1095, 1096)
    ]
    if feature.when_none is not None:
        pairs += [(None, d) for d in DAYS[::50]]
    con = duckdb.connect()
    sql = feature.sql("t").replace(feature.anchor_expr("t"), "a")
    got = con.execute(
        f"SELECT {sql} FROM (SELECT unnest($1::DATE[]) AS a, unnest($2::DATE[]) AS t)",
        [[a for a, _ in pairs], [t for _, t in pairs]],
    ).fetchall()
    want = [feature.value(a, t) for a, t in pairs]
    assert [g[0] for g in got] == want  # exactly: the same integer or the same double


def test_a_publication_derives_what_the_snapshot_computes(small_warehouse, tmp_path):
    as_of = date(2026, 6, 30)
    con = duckdb.connect(str(small_warehouse), read_only=True)
    try:
        expected = con.sql(feature_sql(as_of)).df().set_index("uscc")
        publish(con, as_of, tmp_path, SECRET)
    finally:
        con.close()
    with OnlineStore(tmp_path).current() as snap:
        served = snap.frame().set_index("uscc")
    served = served.loc[expected.index, list(DERIVED)]
    for name in DERIVED:
        assert (served[name].astype(float) == expected[name].astype(float)).all(), name
