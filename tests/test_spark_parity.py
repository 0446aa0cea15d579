"""DuckDB and Spark (local mode) produce identical snapshots from one SQL definition."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from features.engines import DuckDBEngine, SparkEngine, export_tables, spark_session, to_spark_sql
from features.pit import feature_sql
from records.policy import Policy
from tests.helpers import assert_frames_equal

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _both_engines(warehouse, tables):
    """DuckDB on ``warehouse`` and Spark on its tables exported to ``tables``."""
    con = duckdb.connect(str(warehouse), read_only=True)
    export_tables(con, tables)
    # the process's one session (a JVM starts once), ended by tests/conftest.py
    spark = spark_session(master="local[2]")
    yield DuckDBEngine(con), SparkEngine(spark, tables)
    con.close()


@pytest.fixture(scope="module")
def engines(small_warehouse, tmp_path_factory):
    yield from _both_engines(small_warehouse, tmp_path_factory.mktemp("spark_tables"))


def _sorted(t):
    return t.to_pandas().sort_values("uscc").reset_index(drop=True)


@pytest.mark.parametrize(
    ("as_of", "policy"),
    [
        (date(2024, 3, 31), Policy.LEGAL),
        (date(2025, 6, 30), Policy.LEGAL),
        (date(2023, 12, 31), Policy.ALL_PUBLISHED),
    ],
    ids=str,
)
def test_feature_snapshots_are_identical(engines, as_of, policy):
    duck, spark = engines
    a, b = _sorted(duck.features(as_of, policy)), _sorted(spark.features(as_of, policy))
    assert len(a) > 1000
    assert dict(a.dtypes) == dict(b.dtypes)
    assert_frames_equal(a, b)


def test_labels_are_identical(engines):
    duck, spark = engines
    d = date(2024, 6, 30)
    a, b = _sorted(duck.labels(d)), _sorted(spark.labels(d))
    assert a.label.sum() > 0
    assert_frames_equal(a, b)


def test_spark_runs_the_transpiled_text_of_the_same_sql():
    sql = feature_sql(date(2024, 6, 30))
    spark_sql = to_spark_sql(sql)
    assert "MAX_BY" in spark_sql and "RLIKE" in spark_sql  # dialect differences handled by sqlglot
    assert spark_sql != sql


@pytest.fixture(scope="module")
def living_engines(living_warehouse, tmp_path_factory):
    """Both engines on the living domain: versions and history, so knowledge time matters."""
    yield from _both_engines(living_warehouse, tmp_path_factory.mktemp("spark_living"))


@pytest.mark.parametrize(
    ("as_of", "known_at"),
    [(date(2025, 6, 30), date(2025, 6, 30)), (date(2026, 9, 13), date(2026, 9, 13))],
    ids=str,
)
def test_snapshots_as_known_at_are_identical(living_engines, as_of, known_at):
    duck, spark = living_engines
    a = _sorted(duck.features(as_of, known_at=known_at))
    b = _sorted(spark.features(as_of, known_at=known_at))
    now = _sorted(duck.features(as_of))
    assert len(a) > 1000
    assert_frames_equal(a, b)
    assert not a.equals(now)  # the versions known then are not those known now


def test_the_refresh_recomputed_on_spark_writes_what_duckdb_does(living_domain, tmp_path):
    """Days of the feed refreshed twice, the difference computed by DuckDB in one store and
    by Spark (local mode, the same transpiled SQL) in the other: identical stores."""
    import os
    import sqlite3

    from online_store.reader import CURRENT
    from online_store.refresh import Recomputation, RefreshTask, refresh
    from records.changeset import read_changeset
    from records.ingest import ingest
    from tests.helpers import SECRET

    days = sorted((living_domain / "feed").iterdir())[:2]
    stores = {}
    for engine in ("duckdb", "spark"):
        wh, online, feed = (
            tmp_path / f"{engine}.duckdb",
            tmp_path / engine,
            tmp_path / f"f-{engine}",
        )
        ingest(living_domain, wh, progress=False)
        first = read_changeset(days[0]).day
        refresh(
            RefreshTask(wh, None, online, SECRET, as_of=date.fromordinal(first.toordinal() - 1))
        )
        feed.mkdir()
        for d in days:
            (feed / d.name).symlink_to(d)
            r = refresh(RefreshTask(wh, feed, online, SECRET, how=Recomputation(engine)))
            assert r.kind == "incremental" and r.rewritten > 0
        con = sqlite3.connect(online / os.readlink(online / CURRENT))
        stores[engine] = con.execute("SELECT * FROM subjects ORDER BY uscc").fetchall()
        con.close()
    assert stores["duckdb"] == stores["spark"]
