"""``credref monitor``: gather the champion's inputs from the warehouse and MLflow,
compute the report (:mod:`governance.monitor_metrics`), write it
(:mod:`governance.monitor_render`) and log the run to MLflow in the champion's experiment.
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from features.dataset import labelable, month_end_back, observed_through
from features.engines import DuckDBEngine
from governance.monitor_metrics import MonitorInputs
from training.registry import CHAMPION, REFERENCE_ARTIFACT

# --- gathering the inputs from the warehouse and MLflow -----------------------------------------


#: Matured snapshots the back-test reads: the CLI and the notebooks' report alike.
MATURED_COUNT = 4


def gather(
    con, as_of: date, reference: pd.DataFrame, matured_count: int = MATURED_COUNT
) -> MonitorInputs:
    """Features on T and a year before, and the latest matured quarter ends with labels."""

    engine = DuckDBEngine(con)
    through = observed_through(con)
    previous = month_end_back(as_of, 12)
    matured: dict[date, tuple[pd.DataFrame, np.ndarray]] = {}
    d = as_of
    while len(matured) < matured_count and d.year >= 2020:
        if d.month in (3, 6, 9, 12) and labelable(d, 12, through):
            feats = engine.features(d).to_pandas()
            labels = engine.labels(d).to_pandas()
            if not feats.uscc.equals(labels.uscc):
                raise AssertionError(f"{d}: features and labels cover different households")
            matured[d] = (feats, labels["label"].to_numpy())
        d = month_end_back(d, 1)
    return MonitorInputs(
        as_of=as_of,
        reference=reference,
        current=engine.features(as_of).to_pandas(),
        previous_as_of=previous,
        previous=engine.features(previous).to_pandas(),
        matured=matured,
    )


def champion_reference(registered_model: str) -> tuple[str, str, pd.DataFrame]:
    """(version, run id, reference rows) of the champion, from the active MLflow store."""

    client = MlflowClient()
    mv = client.get_model_version_by_alias(registered_model, CHAMPION)
    try:
        path = client.download_artifacts(mv.run_id, REFERENCE_ARTIFACT, tempfile.mkdtemp())
    except Exception as e:
        raise ValueError(
            f"champion v{mv.version} has no {REFERENCE_ARTIFACT}; retrain it with this code"
        ) from e
    return str(mv.version), mv.run_id, pd.read_parquet(path)


def log_to_mlflow(report: dict, files: tuple[Path, Path], champion_run: str) -> str:
    """Log the monitoring run in the champion's experiment; returns its run id."""

    experiment = MlflowClient().get_run(champion_run).info.experiment_id
    with mlflow.start_run(experiment_id=experiment, run_name=f"monitor {report['as_of']}") as run:
        mlflow.set_tags(
            {
                "kind": "monitoring",
                "as_of": report["as_of"],
                "model_version": report["model_version"],
                "champion_run_id": champion_run,
            }
        )
        s = report["summary"]
        mlflow.log_metrics(
            {
                "score_psi": s["score_psi"],
                "max_csi": s["max_csi"],
                "features_flagged": s["features_flagged"],
                "backtest_inconsistent_classes": s["backtest_inconsistent_classes"],
            }
        )
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="monitoring")
    return run.info.run_id
