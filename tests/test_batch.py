"""score-all on Spark gives the same scores, classes and reasons as on DuckDB."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from scoring.batch import score_all_duckdb, score_all_spark
from tests.conftest import SERVICE_AS_OF

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_spark_and_duckdb_score_all_agree(service_home, tmp_path):
    from features.engines import export_tables, spark_session
    from scoring.served import load_served_model, use_store

    use_store(service_home / "bentoml")
    served = load_served_model(f"sqlite:///{service_home / 'mlflow.db'}", "credref-reference")
    con = duckdb.connect(str(service_home / "warehouse.duckdb"), read_only=True)
    d = score_all_duckdb(
        con, SERVICE_AS_OF, served.model, served.version, served.tag, tmp_path / "duck"
    )
    export_tables(con, tmp_path / "tables")
    con.close()
    spark = spark_session()  # the process's one session, shared (tests/conftest.py ends it)
    s = score_all_spark(
        spark,
        tmp_path / "tables",
        SERVICE_AS_OF,
        served.model,
        served.version,
        served.tag,
        tmp_path / "spark",
    )
    a = pd.read_parquet(tmp_path / "duck" / "scores.parquet").set_index("uscc").sort_index()
    b = pd.read_parquet(tmp_path / "spark" / "scores").set_index("uscc").sort_index()
    assert d["rows"] == s["rows"] == len(a) == len(b) > 1000
    assert a.index.equals(b.index)
    for col in ("score", "risk_class", "override", "reasons"):
        assert (a[col].astype(str) == b[col].astype(str)).all(), col
    assert (a.pd - b.pd).abs().max() < 1e-12
    assert set(a.as_of.astype(str)) == set(b.as_of.astype(str)) == {str(SERVICE_AS_OF)}


def test_the_spark_submit_entry_point_scores_the_same(service_home, tmp_path):
    from features.engines import export_tables, spark_session
    from scoring.served import load_served_model, use_store
    from scoring.spark_job import main

    use_store(service_home / "bentoml")
    served = load_served_model(f"sqlite:///{service_home / 'mlflow.db'}", "credref-reference")
    served.model.save(tmp_path / "model")
    con = duckdb.connect(str(service_home / "warehouse.duckdb"), read_only=True)
    export_tables(con, tmp_path / "tables")
    d = score_all_duckdb(
        con, SERVICE_AS_OF, served.model, served.version, served.tag, tmp_path / "duck"
    )
    con.close()
    spark_session()  # the session spark-submit would have configured (UTC, local)
    manifest = main(
        [
            "--tables",
            str(tmp_path / "tables"),
            "--as-of",
            str(SERVICE_AS_OF),
            "--model",
            str(tmp_path / "model"),
            "--out",
            (tmp_path / "cluster").as_uri(),
            "--manifest",
            str(tmp_path / "manifest"),
        ]
    )
    assert manifest["rows"] == d["rows"]
    assert (tmp_path / "manifest" / "manifest.json").exists()
    a = pd.read_parquet(tmp_path / "duck" / "scores.parquet").set_index("uscc").sort_index()
    b = pd.read_parquet(tmp_path / "cluster" / "scores").set_index("uscc").sort_index()
    assert (a.reasons == b.reasons).all() and (a.score == b.score).all()
