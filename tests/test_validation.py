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
from governance.validation import MODEL_CARD_HEADINGS, render_html, run_validation
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
