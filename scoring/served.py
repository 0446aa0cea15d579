"""The served model: MLflow's ``champion`` imported into BentoML's model store.

At build or start the champion is imported (once per MLflow version) as
``credref-reference:mlflow-v<version>-<run id prefix>``. If the tracking store cannot be reached, the
service starts from the newest model already in BentoML's store, and says so in its log;
with neither, it refuses to start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import bentoml
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore

from scoring.model import ScoringModel
from settings import CHAMPION_ALIAS as CHAMPION

logger = logging.getLogger(__name__)

BENTO_MODEL = "credref-reference"


class ModelUnavailable(RuntimeError):
    """No champion in MLflow and no imported model in BentoML's store."""


@dataclass(frozen=True)
class ServedModel:
    model: ScoringModel
    version: str  # the MLflow model version
    tag: str  # the BentoML model tag
    source: str  # "mlflow" (imported now or before) or "bentoml-store" (MLflow unreachable)


def use_store(bentoml_home: Path) -> None:
    """Point BentoML's model store at ``<bentoml_home>/models``."""
    folder = bentoml_home / "models"
    folder.mkdir(parents=True, exist_ok=True)
    BentoMLContainer.model_store.set(ModelStore(str(folder)))


def _tracking_reachable(tracking_uri: str) -> bool:
    if tracking_uri.startswith("sqlite:///"):
        # A missing file is not a store: MLflow would silently create an empty one.
        return Path(tracking_uri.removeprefix("sqlite:///")).is_file()
    return True


def import_champion(tracking_uri: str, registered_model: str) -> bentoml.Model:
    """Import the MLflow champion into BentoML's store (no-op if already there)."""
    # MLflow only when importing the champion: a host that serves from BentoML's store
    # alone, and every request, never loads it.
    import mlflow
    from mlflow.tracking import MlflowClient

    if not _tracking_reachable(tracking_uri):
        raise ModelUnavailable(f"MLflow tracking store not found: {tracking_uri}")
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(registered_model, CHAMPION)
    except mlflow.exceptions.MlflowException as e:
        raise ModelUnavailable(
            f"no '{CHAMPION}' alias on registered model {registered_model!r}; "
            "run `credref train` and `credref promote`"
        ) from e
    # The run id too: a rebuilt tracking store numbers its versions from 1 again.
    tag = f"{BENTO_MODEL}:mlflow-v{mv.version}-{mv.run_id[:12]}"
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        pass
    model = bentoml.mlflow.import_model(
        tag,
        f"models:/{registered_model}/{mv.version}",
        labels={"registered_model": registered_model, "mlflow_version": str(mv.version)},
        metadata={"mlflow_run_id": mv.run_id},
    )
    logger.info("imported MLflow %s v%s into BentoML as %s", registered_model, mv.version, tag)
    return bentoml.models.get(model.tag)  # the stored copy (import works in a temp folder)


def _scoring_folder(model: bentoml.Model) -> Path:
    found = sorted(Path(model.path).rglob("scoring.json"))
    if not found:
        raise ModelUnavailable(f"BentoML model {model.tag} holds no credref scoring model")
    return found[0].parent


def load_served_model(tracking_uri: str, registered_model: str) -> ServedModel:
    """The champion (imported now if needed), else the newest imported model."""
    try:
        model, source = import_champion(tracking_uri, registered_model), "mlflow"
    except Exception as e:  # any failure to reach MLflow: fall back to the local store
        logger.warning("MLflow unavailable (%s); using BentoML's model store", e)
        try:
            candidates = bentoml.models.list(BENTO_MODEL)
        except bentoml.exceptions.NotFound:
            candidates = []
        if not candidates:
            raise ModelUnavailable(
                f"cannot import the champion ({e}) and BentoML's store holds no {BENTO_MODEL} "
                "model; run `credref train` and `credref promote`"
            ) from e
        model = max(candidates, key=lambda m: m.creation_time)
        source = "bentoml-store"
    return ServedModel(
        ScoringModel.load(_scoring_folder(model)),
        model.info.labels.get("mlflow_version", "?"),
        str(model.tag),
        source,
    )
