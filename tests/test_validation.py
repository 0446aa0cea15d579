"""``credref validate`` on the served test home: the report logged to the version's run,
its figures those of the statistics on the same rows."""

from __future__ import annotations

import json
import tempfile
from datetime import date
from pathlib import Path

import duckdb
import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from features.pit import feature_sql, label_sql
from governance.monitor_metrics import stability
from governance.validation import (
    MODEL_CARD_HEADINGS,
    findings,
    render_html,
    run_validation,
    with_verdict,
)
from training.registry import load_version
from training.validation_stats import auc_delong, herfindahl

NAME = "credref-reference"


def test_validation_report_is_logged_and_its_figures_hold(service_home):
    mlflow.set_tracking_uri(f"sqlite:///{service_home / 'mlflow.db'}")
    as_of = date(2026, 6, 30)
    run = MlflowClient().get_model_version(NAME, "1").run_id
    if "test_as_of" not in MlflowClient().get_run(run).data.params:  # as `credref train` logs
        MlflowClient().log_param(run, "test_as_of", "2025-03-31")
    dev_month = date.fromisoformat(MlflowClient().get_run(run).data.params["test_as_of"]).month
    like_day = max(  # the latest month end up to as_of in development's month
        pd.Timestamp(y, dev_month, 1) + pd.offsets.MonthEnd(0)
        for y in (2025, 2026)
        if pd.Timestamp(y, dev_month, 1) + pd.offsets.MonthEnd(0) <= pd.Timestamp(as_of)
    ).date()
    con = duckdb.connect(str(service_home / "warehouse.duckdb"), read_only=True)
    try:
        version, report = run_validation(con, NAME, None, as_of)
        current = con.sql(feature_sql(as_of)).df()
        month = report["by_month"][1]
        quarter_day = date.fromisoformat(month["as_of"])
        q_feats = con.sql(feature_sql(quarter_day)).df()
        q_labels = con.sql(label_sql(quarter_day, 12)).df()
        like = con.sql(feature_sql(like_day)).df()
    finally:
        con.close()
    assert version == "1" and report["matured_as_of"] <= "2025-06-30"
    client = MlflowClient()
    run_id = client.get_model_version(NAME, "1").run_id
    folder = client.download_artifacts(run_id, f"validation/{as_of}", tempfile.mkdtemp())
    logged = json.loads(Path(folder, "validation.json").read_text())
    assert logged["discriminatory_power"] == json.loads(json.dumps(report["discriminatory_power"]))
    html = Path(folder, "validation.html").read_text(encoding="utf-8")
    for heading in MODEL_CARD_HEADINGS:
        assert f">{heading}</h2>" in html
    # the verdict is what the report's own tests say, in the JSON and the HTML alike
    assert logged["findings"] == findings(report) and logged["verdict"] == report["verdict"]
    assert f"Verdict: {report['verdict']}." in html
    assert (report["verdict"] == "passes") == (report["findings"] == [])
    # the development AUC is the statistic on the version's own test rows
    model = load_version(NAME, "1").unwrap_python_model().model
    rows = pd.read_parquet(
        client.download_artifacts(run_id, "evaluation/test_rows.parquet", tempfile.mkdtemp())
    )
    scored = model.score_frame(rows, with_reasons=False)
    assert report["discriminatory_power"]["development"] == auc_delong(
        rows.label.to_numpy(), scored.pd.to_numpy()
    )
    # concentration over the classes on the as-of date
    classes = model.score_frame(current, with_reasons=False).risk_class
    counts = [int((classes == c).sum()) for c in "ABCD"]
    assert report["concentration"]["counts"] == dict(zip("ABCD", counts, strict=True))
    assert report["concentration"]["normalised"] == herfindahl(counts)["normalised"]
    assert (
        sum(r["n"] for r in report["calibration_by_class"])
        == report["discriminatory_power"]["now"]["n"]
    )
    assert np.isfinite(report["population_stability"]["score_psi"])
    # the PSI is taken on the latest day of development's calendar month
    assert report["population_stability"]["against"] == like_day.isoformat()
    like_scores = model.score_frame(like, with_reasons=False)["score"]
    want = stability(scored["score"], like_scores)["psi"]
    assert report["population_stability"]["score_psi"] == want
    # every calendar position: twelve matured month ends, each judged on its own rows
    days = [m["as_of"] for m in report["by_month"]]
    assert len(days) == 12 and days == sorted(days) and days[-1] == report["matured_as_of"]
    by_hand = auc_delong(
        q_labels.label.to_numpy(), model.score_frame(q_feats, with_reasons=False).pd
    )
    assert month["auc"] == by_hand["auc"] and month["n"] == by_hand["n"]
    assert report["worst_month"]["worst_month_auc"] == min(m["auc"] for m in report["by_month"])
    assert "Validation of model version 1" in render_html(report)


def test_the_verdict_states_every_failed_test_and_only_those():
    passing = {
        "discriminatory_power": {
            "development": {"auc": 0.80},
            "now": {"auc": 0.78},
            "change_test": {"p_value": 0.20},
        },
        "calibration_by_class": [
            {"class": c, "pd_too_low": False, "jeffreys_p": 0.5} for c in "ABCD"
        ],
        "population_stability": {"score_psi": 0.03, "verdict": "stable"},
        "worst_month": {},
    }
    assert findings(passing) == [] and with_verdict(passing)["verdict"] == "passes"
    failing = json.loads(json.dumps(passing))
    failing["discriminatory_power"]["change_test"]["p_value"] = 0.001
    failing["calibration_by_class"][2] |= {"pd_too_low": True, "jeffreys_p": 0.01}
    failing["population_stability"] = {"score_psi": 0.31, "verdict": "significant shift"}
    said = with_verdict(failing)
    assert said["verdict"] == "findings" and len(said["findings"]) == 3
    assert "AUC 0.7800 against 0.8000" in said["findings"][0]
    assert said["findings"][1].startswith("class C") and "PSI 0.3100" in said["findings"][2]
    improved = json.loads(json.dumps(passing))
    improved["discriminatory_power"]["now"]["auc"] = 0.85  # a significant rise is no finding
    improved["discriminatory_power"]["change_test"]["p_value"] = 0.001
    assert findings(improved) == []
