"""Training sets and snapshots: dates, labels only where observed, manifest, oracle apart."""

from __future__ import annotations

import json
import shutil
from datetime import date

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from credref.cli.app import app
from features.catalogue import FEATURE_NAMES, catalogue_version
from features.dataset import as_of_dates, build_snapshot, build_training_set, parse_every
from features.engines import DuckDBEngine


def test_as_of_dates_step_by_month_ends():
    assert as_of_dates(date(2021, 6, 30), date(2022, 6, 30), 3) == [
        date(2021, 6, 30),
        date(2021, 9, 30),
        date(2021, 12, 31),
        date(2022, 3, 31),
        date(2022, 6, 30),
    ]
    assert as_of_dates(date(2024, 1, 31), date(2024, 3, 31), 1)[1] == date(2024, 2, 29)
    with pytest.raises(ValueError, match="month end"):
        as_of_dates(date(2021, 6, 15), date(2022, 6, 30), 3)
    assert parse_every("3M") == 3
    with pytest.raises(ValueError, match="3M"):
        parse_every("quarterly")


@pytest.fixture(scope="module")
def con(small_warehouse):
    c = duckdb.connect(str(small_warehouse), read_only=True)
    yield c
    c.close()


def test_training_set_stacks_snapshots_with_a_manifest(con, small_export, tmp_path):
    dates = as_of_dates(date(2023, 6, 30), date(2024, 6, 30), 6)
    manifest = build_training_set(con, dates, tmp_path, truth_dir=small_export / "truth")
    t = pq.read_table(tmp_path / "dataset.parquet").to_pandas()
    assert t.columns.tolist() == ["uscc", "as_of", *FEATURE_NAMES, "label", "oracle_pd"]
    assert manifest["catalogue_version"] == catalogue_version()
    assert manifest["as_of_dates"] == [d.isoformat() for d in dates]
    assert [p["rows"] for p in manifest["per_date"]] == t.groupby("as_of").size().tolist()
    assert manifest["rows"] == len(t) and len(manifest["source_fingerprint"]) == 64
    assert t.oracle_pd.notna().all()  # every household has its oracle value
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    # the oracle is evaluation-only: no feature is named like it
    assert "oracle_pd" not in FEATURE_NAMES and "label" not in FEATURE_NAMES


def test_unobserved_label_windows_are_refused(con, tmp_path):
    with pytest.raises(ValueError, match="not fully observed") as err:
        build_training_set(con, [date(2025, 6, 30), date(2025, 12, 31)], tmp_path)
    assert "2025-12-31" in str(err.value) and "2025-06-30" not in str(err.value)
    assert not (tmp_path / "dataset.parquet").exists()


def test_snapshot_and_cli(con, small_warehouse, tmp_path, monkeypatch):
    m = build_snapshot(con, date(2026, 9, 30), tmp_path / "snap.parquet")
    assert m["rows"] == pq.read_metadata(tmp_path / "snap.parquet").num_rows > 0
    written = pq.read_table(tmp_path / "snap.parquet").to_pandas()
    expected = DuckDBEngine(con).features(date(2026, 9, 30)).to_pandas()
    pd.testing.assert_frame_equal(written, expected)  # same rows, order, values and types
    # The CLI runs in this process here; give it its own copy (DuckDB refuses a second
    # connection to one file with other settings).
    copy = tmp_path / "wh.duckdb"
    shutil.copy(small_warehouse, copy)
    monkeypatch.setenv("CREDREF_WAREHOUSE", str(copy))
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "dataset",
            "--out",
            str(tmp_path / "ds"),
            "--from",
            "2024-06-30",
            "--to",
            "2025-06-30",
            "--every",
            "6M",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "2025-06-30" in r.output
    r = runner.invoke(app, ["dataset", "--out", str(tmp_path / "ds2"), "--to", "2026-06-30"])
    assert r.exit_code == 2 and "not fully observed" in r.output
    r = runner.invoke(
        app, ["features", "--as-of", "2026-09-30", "--out", str(tmp_path / "s.parquet")]
    )
    assert r.exit_code == 0 and "households operating on 2026-09-30" in r.output


def test_dense_dates_add_the_first_days_up_to_their_day_at_half_the_households():
    from features.dataset import dense_dates

    ends = as_of_dates(date(2024, 5, 31), date(2024, 9, 30), 1)
    dates, shares = dense_dates(ends, date(2024, 8, 31))
    assert dates == [
        date(2024, 5, 31), date(2024, 6, 1), date(2024, 6, 30), date(2024, 7, 1),
        date(2024, 7, 31), date(2024, 8, 1), date(2024, 8, 31), date(2024, 9, 30),
    ]  # fmt: skip
    assert shares[date(2024, 7, 1)] == 0.5 and shares[date(2024, 8, 31)] == 1.0
    assert shares[date(2024, 6, 30)] == 0.5  # its first day is dense too: both halved


def test_keep_share_keeps_about_half_the_same_households_each_run_and_others_another_day():
    import pyarrow as pa

    from features.dataset import keep_share

    t = pa.table({"uscc": [f"h{i}" for i in range(4000)]})
    a = keep_share(t, date(2024, 7, 1), 0.5).column("uscc").to_pylist()
    b = keep_share(t, date(2024, 7, 1), 0.5).column("uscc").to_pylist()
    c = keep_share(t, date(2024, 7, 31), 0.5).column("uscc").to_pylist()
    assert a == b and 1800 < len(a) < 2200 and set(a) != set(c)
    assert keep_share(t, date(2024, 7, 1), 1.0).num_rows == 4000
