"""The analyst's API: what the notebooks call, so no pipeline code is copied into cells.

Everything reads the settings (``CREDREF_*``); without ``CREDREF_HOME`` it uses the demo's
state under ``var/demo`` of this repository, as ``make demo`` leaves it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from features.catalogue import CATEGORIES, FEATURE_NAMES, FEATURES, REASONS
from features.dataset import observed_through
from features.engines import DuckDBEngine
from governance.monitor import MATURED_COUNT, champion_reference, gather
from governance.monitor_metrics import build_report
from records.policy import Policy
from records.summary import city_summary
from records.warehouse import connect
from scoring.model import encode
from scoring.served import load_served_model, use_store
from settings import Settings
from training.registry import CHAMPION, TEST_ROWS

REPO = Path(__file__).resolve().parent.parent


def settings() -> Settings:
    """The settings from ``CREDREF_*``; without ``CREDREF_HOME``, the demo's home (the
    environment itself is never written)."""
    if "CREDREF_HOME" in os.environ:
        return Settings()
    return Settings(home=REPO / "var" / "demo")


def warehouse():
    """A read-only connection to the warehouse."""

    s = settings()
    return connect(s.warehouse_path, read_only=True, memory_limit=s.duckdb_memory_limit)


def last_observed(con) -> date:

    return observed_through(con)


# --- records ------------------------------------------------------------------------------


def records_by_city(con) -> pd.DataFrame:

    return city_summary(con)


def age_profile(con, as_of: date) -> pd.DataFrame:
    """Registration age (years) of every household operating on ``as_of``, with its city."""
    f = features(con, as_of)
    return f[["city", "reg_age_years"]]


def adverse_rate_by_city(con, as_of: date) -> pd.DataFrame:
    """Share of households operating on ``as_of`` with an adverse event in the next year."""

    e = DuckDBEngine(con)
    f = e.features(as_of).to_pandas()[["uscc", "city"]]
    y = e.labels(as_of).to_pandas()
    return (
        f.merge(y, on="uscc")
        .groupby("city")
        .label.agg(households="size", adverse_rate="mean")
        .sort_values("adverse_rate")
    )


# --- features -----------------------------------------------------------------------------


def catalogue() -> pd.DataFrame:
    """The feature catalogue as a table."""
    return pd.DataFrame(
        [
            {
                "feature": f.name,
                "source": f.source,
                "type": f.value_type,
                "monotone": f.monotone,
                "reason": f.reason,
                "zh": f.description_zh,
                "en": f.description_en,
            }
            for f in FEATURES
        ]
    )


def reasons() -> pd.DataFrame:
    return pd.DataFrame([{"code": r.code, "zh": r.text_zh, "en": r.text_en} for r in REASONS])


def features(con, as_of: date, policy: Policy = Policy.LEGAL) -> pd.DataFrame:
    """The point-in-time feature snapshot of ``as_of``."""

    return DuckDBEngine(con).features(as_of, policy).to_pandas()


def _policy_differences(con, as_of: date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The features under the legal-use policy and under 'all published', and where they
    differ (households x features, True where the two values differ)."""
    legal = features(con, as_of).set_index("uscc")
    everything = features(con, as_of, Policy.ALL_PUBLISHED).set_index("uscc").loc[legal.index]
    cols = list(FEATURE_NAMES)
    a, b = legal[cols], everything[cols]
    return legal, everything, ~((a == b) | (a.isna() & b.isna()))


def policy_at_work(con, as_of: date, n: int = 10) -> pd.DataFrame:
    """Households whose features differ between the legal-use policy and 'all published'
    records, with the features that differ: the policy at work on real examples."""
    legal, everything, differs = _policy_differences(con, as_of)
    rows = []
    for col in differs.columns:
        for uscc in differs.index[differs[col]][:n]:
            rows.append(
                {"uscc": uscc, "feature": col, "legal": legal.at[uscc, col],
                 "all_published": everything.at[uscc, col]}
            )  # fmt: skip
    return pd.DataFrame(rows)


def policy_reach(con, as_of: date) -> pd.Series:
    """How many operating households each feature differs for between the two policies:
    what the legal-use rules withhold, feature by feature (features they never touch left
    out)."""
    counts = _policy_differences(con, as_of)[2].sum()
    return counts[counts > 0].sort_values()


# --- the model ----------------------------------------------------------------------------


@dataclass
class Champion:
    version: str
    run_id: str
    metrics: dict[str, float]
    params: dict[str, str]
    model: object  # scoring.model.ScoringModel


def quiet_mlflow() -> None:
    """No artefact progress bars nor MLflow's INFO lines in a notebook's output (as the
    command line without -v): they say nothing about the figures."""
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def champion() -> Champion:
    """The MLflow champion: its scoring model, its run's metrics and parameters."""

    s = settings()
    quiet_mlflow()
    use_store(s.bentoml_path)
    mlflow.set_tracking_uri(s.tracking_uri)
    client = MlflowClient()
    mv = client.get_model_version_by_alias(s.registered_model, CHAMPION)
    run = client.get_run(mv.run_id)
    served = load_served_model(s.tracking_uri, s.registered_model)
    return Champion(str(mv.version), mv.run_id, run.data.metrics, run.data.params, served.model)


def test_rows(champ: Champion) -> pd.DataFrame:
    """The champion's out-of-time test rows (features and label), as logged at training."""

    path = MlflowClient().download_artifacts(champ.run_id, TEST_ROWS, tempfile.mkdtemp())
    return pd.read_parquet(path)


def scored(champ: Champion, frame: pd.DataFrame) -> pd.DataFrame:
    """PD, score, class and reasons for rows holding the catalogue's features."""
    return champ.model.score_frame(frame)  # type: ignore[attr-defined]


def contributions(champ: Champion, frame: pd.DataFrame) -> pd.DataFrame:
    """Per-feature contributions to the margin (SHAP values / points)."""

    c = champ.model.contributions(encode(frame))  # type: ignore[attr-defined]
    return pd.DataFrame(c, columns=list(FEATURE_NAMES), index=frame.index)


def reason_frequencies(scores: pd.DataFrame) -> pd.Series:
    """How often each reason code is given (any position)."""
    return scores.reasons.str.split(";").explode().value_counts()


def points_table(champ: Champion) -> pd.DataFrame | None:
    """The additive champion's points table, in score points (None for a tree champion)."""
    m = champ.model
    if m.points is None:  # type: ignore[attr-defined]
        return None
    return m.points.as_frame(-m.scale.factor * m.calib_a)  # type: ignore[attr-defined]


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    q = pd.qcut(p, bins, duplicates="drop")
    return (
        pd.DataFrame({"bin": q, "y": y, "p": p})
        .groupby("bin", observed=True)
        .agg(rows=("y", "size"), predicted=("p", "mean"), observed=("y", "mean"))
    )


# --- monitoring ---------------------------------------------------------------------------


def monitoring_report(con, as_of: date, matured: int = MATURED_COUNT) -> dict:
    """The figures of ``credref monitor``, the same run (not logged to MLflow)."""

    champ = champion()
    version, _, reference = champion_reference(settings().registered_model)
    inputs = gather(con, as_of, reference, matured_count=matured)
    return build_report(champ.model, inputs, version)  # type: ignore[arg-type]


def city_names() -> tuple[str, ...]:
    return CATEGORIES["city"]
