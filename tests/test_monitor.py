"""Monitoring: figures against hand computations, drift flagged only where it is."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.catalogue import FEATURE_NAMES, FEATURES_BY_NAME
from features.dataset import as_of_dates, build_training_set
from governance.monitor import gather
from governance.monitor_metrics import backtest, build_report, migration, stability, verdict
from governance.monitor_render import write_report
from records.ingest import ingest
from synth.generate import generate
from tests.conftest import SERVICE_AS_OF
from tests.helpers import service_env
from training.calibration import make_scoring_model
from training.data import load_training_set, split_out_of_time
from training.evaluate import slice_table
from training.models import fit_booster, points_table


def _psi(pairs):
    return sum((c - r) * math.log(c / r) for r, c in pairs)


def test_psi_equals_the_hand_computation():
    expected = _psi([(0.5, 0.8), (0.5, 0.2)])  # 0.4159...
    cat = stability(["A"] * 50 + ["B"] * 50, ["A"] * 80 + ["B"] * 20, categories=("A", "B"))
    assert cat["psi"] == pytest.approx(expected) and cat["verdict"] == "significant shift"
    num = stability(np.arange(10.0), np.array([0.0] * 8 + [9.0] * 2), bins=2)
    assert [b["bin"] for b in num["bins"]] == ["<= 4.5", "> 4.5", "(missing)"]
    assert num["psi"] == pytest.approx(expected)
    same = stability(np.arange(100.0), np.arange(100.0))
    assert same["psi"] == pytest.approx(0.0) and same["verdict"] == "stable"
    with_missing = stability(np.array([1.0, 2.0]), np.array([1.0, np.nan]), bins=2)
    assert with_missing["bins"][-1]["current"] == 0.5
    assert [verdict(0.05), verdict(0.1), verdict(0.3)] == [
        "stable",
        "moderate shift",
        "significant shift",
    ]


def test_backtest_migration_and_slices_equal_hand_counts():
    classes = np.array(["A"] * 100 + ["B"] * 100)
    pd_ = np.array([0.1] * 100 + [0.5] * 100)
    y = np.array([1] * 10 + [0] * 90 + [1] * 80 + [0] * 20)
    a, b, c, d = backtest(classes, pd_, y)
    assert (a["n"], a["events"], a["observed_rate"]) == (100, 10, 0.1)
    assert a["predicted_rate"] == pytest.approx(0.1)
    assert a["consistent"] and a["p_value"] > 0.5
    assert b["observed_rate"] == 0.8 and not b["consistent"] and b["p_value"] < 1e-6
    assert c == {"class": "C", "n": 0} and d == {"class": "D", "n": 0}

    prev = pd.Series(["A", "A", "B", "D"], index=["u1", "u2", "u3", "u4"])
    cur = pd.Series(["A", "C", "B", "X"], index=["u1", "u2", "u3", "u9"])
    m = migration(prev, cur)
    assert m.loc["A", "A"] == 1 and m.loc["A", "C"] == 1 and m.loc["B", "B"] == 1
    assert m.loc["D", "exited"] == 1 and int(m.to_numpy().sum()) == 4

    frame = pd.DataFrame(
        {
            "city": ["X"] * 4 + ["Y"] * 4,
            "org_form": ["individual"] * 8,
            "industry": ["F"] * 8,
            "age_band": ["1-3y"] * 8,
            "y": [1, 0, 1, 0, 0, 0, 1, 0],
            "pd": [0.9, 0.1, 0.8, 0.2, 0.3, 0.4, 0.1, 0.2],
            "risk_class": ["D", "A", "D", "A", "B", "B", "A", "A"],
        }
    )
    rows = {(r["dimension"], r["slice"]): r for r in slice_table(frame)}
    x, yy = rows[("city", "X")], rows[("city", "Y")]
    assert x["d_rate_ratio"] == pytest.approx(2.0) and yy["d_rate_ratio"] == 0.0
    assert x["auc"] == 1.0 and yy["auc"] == 0.0  # Y's only event has its lowest PD
    assert x["observed_rate"] == 0.5 and x["mean_pd"] == pytest.approx(0.5)
    assert x["calibration_ratio"] == pytest.approx(1.0) and x["share_D"] == 0.5
    assert rows[("industry", "F")]["d_rate_ratio"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    out = {}
    for name, drift in (("plain", False), ("drift", True)):
        generate(
            root / name, 15_000, 5, date(2026, 9, 30), b"s", workers=1, progress=False, drift=drift
        )
        ingest(root / name, root / f"{name}.duckdb", progress=False)
        out[name] = root / f"{name}.duckdb"
    con = duckdb.connect(str(out["plain"]), read_only=True)
    build_training_set(con, as_of_dates(date(2021, 6, 30), date(2023, 12, 31), 3), root / "ds")
    con.close()
    df, _ = load_training_set(root / "ds")
    tr, va, _ = split_out_of_time(df, date(2022, 12, 31), date(2023, 6, 30))
    # Leaves of 200 rows, as written: the fixture's model does not follow the size-aware defaults.
    booster = fit_booster("additive", tr, va, {"min_data_in_leaf": 200}, seed=1, rounds=60)
    model = make_scoring_model(booster, "additive", va.X, va.y, points_table(booster, va.X))
    reference = df[df.as_of <= date(2022, 12, 31)][["as_of", *FEATURE_NAMES]].reset_index(drop=True)
    return out, model, reference


def test_the_drift_domain_is_flagged_and_the_plain_one_is_not(domains, tmp_path):
    paths, model, reference = domains
    reports = {}
    for name, path in paths.items():
        con = duckdb.connect(str(path), read_only=True)
        inputs = gather(con, date(2026, 6, 30), reference, matured_count=2)
        con.close()
        reports[name] = build_report(model, inputs, "test")
    drift, plain = reports["drift"], reports["plain"]
    wuhan_drift = drift["segment_psi"]["segments"]["Wuhan"]["psi"]
    wuhan_plain = plain["segment_psi"]["segments"]["Wuhan"]["psi"]
    assert "Wuhan" in drift["summary"]["segments_flagged"], wuhan_drift
    assert "Wuhan" not in plain["summary"]["segments_flagged"], wuhan_plain
    assert wuhan_drift > 2 * wuhan_plain
    wuhan_d = {r["slice"]: r for r in drift["slices"]["rows"] if r["dimension"] == "city"}["Wuhan"]
    assert wuhan_d["observed_rate"] > wuhan_d["mean_pd"]  # the model under-predicts there
    assert set(drift["backtest"]) == {"2025-06-30", "2025-09-30"}
    # a calendar feature's "shift" is the day's position, never a finding
    calendar = [n for n in drift["feature_csi"] if FEATURES_BY_NAME[n].calendar]
    assert calendar and not set(calendar) & set(drift["flagged_features"])
    assert {drift["feature_csi"][n]["verdict"] for n in calendar} == {"calendar position"}
    # the verdict is never "stable" beside a failed test: drift finds Wuhan
    assert drift["summary"]["verdict"] == "findings"
    assert any("Wuhan" in f for f in drift["summary"]["findings"])
    for s in (drift["summary"], plain["summary"]):
        failed = (
            s["score_verdict"] != "stable"
            or s["features_flagged"]
            or s["segments_flagged"]
            or s["slices_miscalibrated"]
            or s["backtest_inconsistent_classes"]
        )
        assert (s["verdict"] == "stable") == (not failed) == (s["findings"] == [])

    json_path, html_path = write_report(drift, tmp_path)
    text = html_path.read_text()
    for name in FEATURE_NAMES:
        assert name in text
    assert text.count('src="data:image/png;base64,') >= 5
    assert json.loads(json_path.read_text())["summary"] == json.loads(json.dumps(drift["summary"]))


def test_credref_monitor_writes_the_report_and_logs_it_next_to_the_champion(service_home, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    env = {**os.environ, **service_env(service_home)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "credref.cli",
            "monitor",
            "--as-of",
            str(SERVICE_AS_OF),
            "--out",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.json").exists()
    assert "score PSI" in r.stdout
    mlflow.set_tracking_uri(f"sqlite:///{service_home / 'mlflow.db'}")
    runs = MlflowClient().search_runs(
        [e.experiment_id for e in MlflowClient().search_experiments()],
        "tags.kind = 'monitoring'",
    )
    assert runs and runs[0].data.tags["as_of"] == str(SERVICE_AS_OF)
    assert "score_psi" in runs[0].data.metrics
