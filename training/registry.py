"""MLflow: the tracking store, the pyfunc artefact, promotion with a gate, rollback.

The tracking URI is always set explicitly (sqlite by default) and artefacts go to an
explicit folder, never to ``./mlruns``. One registered model; the alias ``champion``
marks the model in service, ``previous`` the one before it, and the registered model's
tag ``champion_history`` keeps the order of promotions so ``rollback`` can restore it.
Four eyes: each version records who trained it; whoever approves a promotion must be
someone else, and the approval (who, when, the gate's evidence) is recorded on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from scoring.model import ScoringModel
from settings import CHAMPION_ALIAS
from training import by_month

logger = logging.getLogger(__name__)

CHAMPION, PREVIOUS, HISTORY_TAG = CHAMPION_ALIAS, "previous", "champion_history"
#: Version tags of the four-eyes rule: who trained it, who approved it, when, and why.
TRAINED_BY, APPROVED_BY, APPROVED_AT, GATE_EVIDENCE = (
    "trained_by",
    "approved_by",
    "approved_at",
    "gate_evidence",
)
ECE_MAX = 0.02
AUC_TOLERANCE = 0.005
TEST_ROWS = "evaluation/test_rows.parquet"
#: The training rows' scores and features that monitoring compares each day against.
REFERENCE_ARTIFACT = "monitoring/reference.parquet"


def use_tracking(tracking_uri: str, artifact_root: Path, experiment: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        if found.artifact_location != artifact_root.resolve().as_uri():
            raise ValueError(
                f"the MLflow store keeps experiment {experiment!r}'s artefacts in "
                f"{found.artifact_location}, not in this home's {artifact_root}: the home was "
                "moved or copied; run `credref relocate` first"
            )
        exp_id = found.experiment_id
    else:
        artifact_root.mkdir(parents=True, exist_ok=True)
        exp_id = mlflow.create_experiment(
            experiment,
            artifact_location=artifact_root.resolve().as_uri(),
            # the MLflow UI opens a model-training experiment on its runs and models, not
            # on the GenAI (traces) view it otherwise picks
            tags={EXPERIMENT_KIND: "custom_model_development"},
        )
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


#: Where MLflow's sqlite store keeps absolute artefact locations: what a moved home rewrites.
LOCATIONS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def relocate_store(tracking_uri: str, artifact_root: Path) -> dict[str, int]:
    """Point a sqlite MLflow store that moved with its home at the home's artefact folder:
    every location under the old folder (the one its experiments were created with) is
    rewritten under ``artifact_root``, in one transaction. Returns the rows rewritten per
    column ({} when nothing pointed elsewhere)."""
    if not tracking_uri.startswith("sqlite:///"):
        raise ValueError("only a sqlite tracking store moves with its home")
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    if not path.is_file():
        raise ValueError(f"no MLflow store at {path}")
    new = artifact_root.resolve().as_uri()
    con = sqlite3.connect(path)
    try:
        old = [
            loc
            for (loc,) in con.execute("SELECT DISTINCT artifact_location FROM experiments")
            if loc and loc.startswith("file://") and loc != new
        ]
        done: dict[str, int] = {}
        with con:  # one transaction: all of it, or nothing
            for prefix in old:
                for table, column in LOCATIONS:
                    cursor = con.execute(  # the old folder itself, or a path under it
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE substr({column}, 1, ?) = ? "
                        f"AND substr({column}, ?, 1) IN ('', '/')",
                        (new, len(prefix) + 1, len(prefix), prefix, len(prefix) + 1),
                    )
                    if cursor.rowcount:
                        key = f"{table}.{column}"
                        done[key] = done.get(key, 0) + cursor.rowcount
    finally:
        con.close()
    return done


#: The experiment tag MLflow's UI reads to choose its view.
EXPERIMENT_KIND = "mlflow.experimentKind"


def code_version() -> str | None:
    """The git commit of the code that trains, if it runs from a checkout (else None)."""
    try:
        found = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found.stdout.strip() if found.returncode == 0 else None


class CredrefPyfunc(mlflow.pyfunc.PythonModel):
    """Output: pd, score, risk_class, override, reasons (codes joined by ';')."""

    def load_context(self, context):
        self.model = ScoringModel.load(Path(context.artifacts["scoring_model"]))

    # Typed (a frame in, a frame out): MLflow then neither warns that hints are missing
    # nor converts the input; the signature logged with the model still describes it.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.model.score_frame(model_input)


class _Said(logging.Filter):
    """Drops the MLflow log lines that say nothing about this model (see _quiet_logging)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CloudPickle" not in record.getMessage()


@contextlib.contextmanager
def mlflow_advice_silenced():
    """MLflow's advice that does not apply here, silenced while a model or a training set
    is logged:
    - the wrapper is pickled with CloudPickle: it is this repository's own class
      (``CredrefPyfunc``), and the scoring model itself is saved as plain files;
    - integer columns cannot hold missing values: the score is never missing, and a
      training set's integer columns are counts it holds for every row;
    - no input example was given: the signature is given explicitly;
    - a training set's source "can be interpreted in multiple ways": it is a local folder."""
    said = _Said()
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    pyfunc_log.addFilter(said)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot")
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
            yield
    finally:
        pyfunc_log.removeFilter(said)


def log_scoring_model(model: ScoringModel, sample: pd.DataFrame, registered_name: str) -> str:
    """Log the pyfunc in the active run and register a new version; returns the version."""

    with tempfile.TemporaryDirectory() as tmp, mlflow_advice_silenced():
        folder = Path(tmp) / "scoring_model"
        model.save(folder)
        signature = infer_signature(sample, model.score_frame(sample))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CredrefPyfunc(),
            artifacts={"scoring_model": str(folder)},
            signature=signature,
            registered_model_name=registered_name,
            pip_requirements=["credref"],
        )
    return str(info.registered_model_version)


def load_version(name: str, version: str):
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def champion_version(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


@dataclass
class GateResult:
    promoted: bool
    version: str
    reasons: list[str] = field(default_factory=list)
    challenger_auc: float | None = None
    champion_auc: float | None = None


def _test_rows(client: MlflowClient, run_id: str) -> pd.DataFrame:
    path = client.download_artifacts(run_id, TEST_ROWS, tempfile.mkdtemp())
    return pd.read_parquet(path)


def promote(
    name: str,
    version: str | None = None,
    *,
    approver: str,
    impact_share: float | None = None,
    max_class_change: float = 0.2,
    accept_impact: str | None = None,
) -> GateResult:
    """Make ``version`` (default: the newest) the champion if it passes the gate.

    Gate: four eyes (the approver is not who trained it); its training checks passed;
    its out-of-time ECE <= 0.02, overall and in every month of its test year, with the
    worst month's oracle ratio and calendar-only class moves within the targets
    (``training.by_month``); its AUC on its own out-of-time test rows is not below
    the current champion's AUC on the same rows by more than 0.005. Otherwise nothing
    changes and the reasons are returned. A promotion records the approver, the time and
    the gate's evidence on the version. ``impact_share`` (``governance.impact``: the share
    of published households the switch moves between classes) above
    ``max_class_change`` is refused unless ``accept_impact`` gives the reason, which is
    recorded.
    """
    if not approver.strip():
        raise ValueError("an approver is required (four eyes: who approves this promotion)")
    client = MlflowClient()
    version = version or _newest(client, name)
    mv = client.get_model_version(name, version)
    run = client.get_run(mv.run_id)
    result = GateResult(False, version)
    current = champion_version(client, name)
    result.reasons += _four_eyes(mv, run, version, approver)
    result.reasons += _quality(run, version, current)
    result.reasons += _discrimination(client, name, mv.run_id, version, current, result)
    accepted = (accept_impact or "").strip()
    if impact_share is not None and impact_share > max_class_change and not accepted:
        result.reasons.append(
            f"{impact_share:.1%} of published households would change class, above "
            f"{max_class_change:.0%}; accept it with a recorded reason (--accept-impact)"
        )
    if result.reasons:
        return result
    if impact_share is not None:
        client.set_model_version_tag(
            name, version, "impact_class_change_share", f"{impact_share:.6f}"
        )
    if accepted:
        client.set_model_version_tag(name, version, "impact_accepted", accepted)
    history = _history(client, name)
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, current)
    client.set_registered_model_alias(name, CHAMPION, version)
    _set_history(client, name, [*history, version])
    _record_approval(
        client, name, version, approver, result, run.data.metrics.get("test_ece"), current
    )
    result.promoted = True
    return result


def _newest(client: MlflowClient, name: str) -> str:
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise ValueError(f"no registered model named {name!r}; run `credref train` first")
    return str(max(int(v.version) for v in versions))


def _four_eyes(mv, run, version: str, approver: str) -> list[str]:
    trainer = mv.tags.get(TRAINED_BY) or run.data.tags.get(TRAINED_BY)
    if trainer is None:
        return [f"version {version} does not record who trained it"]
    if _same_person(trainer, approver):
        return [
            f"four eyes: {approver.strip()} trained version {version}; someone else must approve"
        ]
    return []


def _quality(run, version: str, current: str | None) -> list[str]:
    """Checks passed, calibration within bounds, not already in service."""
    out = []
    if run.data.tags.get("checks_passed") != "true":
        out.append("training checks did not pass: " + run.data.tags.get("check_failures", "?"))
    ece = run.data.metrics.get("test_ece")
    if ece is None or ece > ECE_MAX:
        out.append(f"test ECE {ece} exceeds {ECE_MAX}")
    out += _every_month(run)
    if current == version:
        out.append(f"version {version} is already the champion")
    return out


def _every_month(run) -> list[str]:
    """The worst month of the test year against the targets (``training.by_month``): a
    version that never measured them (trained before they existed) is refused too."""
    m = run.data.metrics
    if "test_worst_month_ece" not in m:
        return ["the version was not judged month by month over a test year; retrain it"]
    return by_month.failures(
        {
            "worst_month_ece": m["test_worst_month_ece"],
            "worst_month_oracle_ratio": m.get("test_worst_month_oracle_ratio"),
            "worst_month_class_moves_without_event": m.get(
                "test_worst_month_class_moves_without_event"
            ),
        }
    )


def _discrimination(client, name, run_id, version, current, result: GateResult) -> list[str]:
    """Challenger and champion AUC on the challenger's test rows (kept on ``result``)."""
    rows = _test_rows(client, run_id)
    y = rows.pop("label").to_numpy()
    result.challenger_auc = float(roc_auc_score(y, _pd(name, version, rows)))
    if current is None or current == version:
        return []
    result.champion_auc = float(roc_auc_score(y, _pd(name, current, rows)))
    if result.challenger_auc < result.champion_auc - AUC_TOLERANCE:
        return [
            f"AUC {result.challenger_auc:.4f} is below the champion's {result.champion_auc:.4f} "
            f"on the same test rows by more than {AUC_TOLERANCE}"
        ]
    return []


def _pd(name: str, version: str, rows: pd.DataFrame) -> np.ndarray:
    """A registered version's PD on ``rows``: the scoring model the pyfunc wraps, asked
    without reasons (the gate compares discrimination; reasons for every test row were
    most of its time)."""
    model = load_version(name, version).unwrap_python_model().model
    return model.score_frame(rows, with_reasons=False)["pd"].to_numpy()


def _same_person(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _record_approval(client, name, version, approver, result, ece, previous) -> None:
    evidence = {
        "challenger_auc": result.challenger_auc,
        "champion_auc": result.champion_auc,
        "previous_champion": previous,
        "test_ece": ece,
        "ece_max": ECE_MAX,
        "auc_tolerance": AUC_TOLERANCE,
        "checks_passed": True,
    }
    client.set_model_version_tag(name, version, APPROVED_BY, approver.strip())
    client.set_model_version_tag(
        name, version, APPROVED_AT, datetime.now(UTC).isoformat(timespec="seconds")
    )
    client.set_model_version_tag(name, version, GATE_EVIDENCE, json.dumps(evidence, sort_keys=True))


def record_trainer(name: str, version: str, trained_by: str) -> None:
    """Who trained a registered version (the four-eyes rule reads it)."""
    MlflowClient().set_model_version_tag(name, version, TRAINED_BY, trained_by)


def rollback(name: str) -> str:
    """Restore the previous champion; returns the version now in service."""
    client = MlflowClient()
    history = _history(client, name)
    if len(history) < 2:
        raise ValueError("no previous champion to roll back to")
    history = history[:-1]
    client.set_registered_model_alias(name, CHAMPION, history[-1])
    if len(history) >= 2:
        client.set_registered_model_alias(name, PREVIOUS, history[-2])
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    _set_history(client, name, history)
    return history[-1]


def _history(client: MlflowClient, name: str) -> list[str]:
    tags = client.get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def _set_history(client: MlflowClient, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
