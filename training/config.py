"""A training config (``credref train --config``, e.g. configs/demo.toml): read and
checked before anything heavy is loaded, so a wrong path or key is said at once."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from scoring.spec import CREDREF, ModelSpec, load_spec

#: Long-run PD at the class cuts A|B, B|C, C|D unless the training config says otherwise:
#: fixed bands, published with each model version in its score guide, so a class means the
#: same thing on every day (never quantiles of one window).
DEFAULT_CLASS_BANDS = (0.065, 0.10, 0.14)


@dataclass(frozen=True)
class TrainConfig:
    dataset: Path
    train_end: date
    valid_end: date
    dataset_all_published: Path | None = None
    seed: int = 7
    rounds: int = 2000
    params: dict = field(default_factory=dict)
    experiment: str = "credref"
    #: long-run PD at the class cuts A|B, B|C, C|D: fixed bands, published per version
    class_bands: tuple[float, float, float] = DEFAULT_CLASS_BANDS
    #: Optuna trials before fitting, per tuned kind (0: the params as given)
    trials: int = 0
    #: Parameters found for a kind by tuning (a kind not here takes ``params``)
    kind_params: dict = field(default_factory=dict)
    #: what each search found against its start (one line per tuned kind)
    tuning: tuple[str, ...] = ()
    #: the catalogue the model is trained on (``[model] spec = "MODULE:NAME"``)
    spec: ModelSpec = CREDREF

    def params_for(self, kind: str) -> dict:
        return self.kind_params.get(kind, self.params)

    @classmethod
    def from_toml(cls, path: Path) -> TrainConfig:
        d = tomllib.loads(path.read_text())
        _refuse_unknown(path, d)
        data, model = d.get("data", {}), d.get("model", {})
        try:
            return cls(
                dataset=Path(data["dataset"]),
                train_end=date.fromisoformat(str(data["train_end"])),
                valid_end=date.fromisoformat(str(data["valid_end"])),
                dataset_all_published=Path(data["dataset_all_published"])
                if data.get("dataset_all_published")
                else None,
                seed=int(model.get("seed", 7)),
                rounds=int(model.get("rounds", 2000)),
                params=dict(model.get("params", {})),
                experiment=d.get("mlflow", {}).get("experiment", "credref"),
                class_bands=_class_bands(model.get("class_bands", DEFAULT_CLASS_BANDS)),
                trials=int(model.get("trials", 0)),
                spec=load_spec(model["spec"]) if model.get("spec") else CREDREF,
            )
        except KeyError as e:
            raise ValueError(f"{path}: missing setting {e}") from e


#: Every setting a training config may hold, by section: anything else is a typo that
#: would otherwise be ignored silently.
CONFIG_KEYS = {
    "data": {"dataset", "dataset_all_published", "train_end", "valid_end"},
    "model": {"seed", "rounds", "params", "class_bands", "trials", "spec"},
    "mlflow": {"experiment"},
}


def _refuse_unknown(path: Path, config: dict) -> None:
    unknown = [f"[{s}]" for s in config if s not in CONFIG_KEYS]
    for section, keys in CONFIG_KEYS.items():
        found = config.get(section, {})
        if not isinstance(found, dict):
            raise ValueError(f"{path}: [{section}] is not a section")
        unknown += [f"[{section}] {k}" for k in found if k not in keys]
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}")


def _class_bands(value) -> tuple[float, float, float]:
    bands = tuple(float(v) for v in value)
    if len(bands) != 3 or not 0 < bands[0] < bands[1] < bands[2] < 1:
        raise ValueError(f"class_bands must be three increasing PDs in (0, 1): {list(bands)}")
    return bands  # type: ignore[return-value]
