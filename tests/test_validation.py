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

from features.pit import feature_sql
from training.registry import load_version
from training.validation import MODEL_CARD_HEADINGS, render_html, run_validation
from training.validation_stats import auc_delong, herfindahl

NAME = "credref-reference"


def test_validation_report_is_logged_and_its_figures_hold(service_home):
    mlflow.set_tracking_uri(f"sqlite:///{service_home / 'mlflow.db'}")
    as_of = date(2026, 6, 30)
    con = duckdb.connect(str(service_home / "warehouse.duckdb"), read_only=True)
    try:
        version, report = run_validation(con, NAME, None, as_of)
        current = con.sql(feature_sql(as_of)).df()
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
    assert "Validation of model version 1" in render_html(report)
