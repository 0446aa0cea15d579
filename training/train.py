"""``credref train``: fit the model family out of time, check, evaluate, log, register.

Same config and seed give the same model (LightGBM runs deterministic).
"""

from __future__ import annotations

import json
import logging
import tempfile
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from features.catalogue import FEATURE_NAMES, catalogue_dict, catalogue_version
from training.checks import run_checks
from training.data import Split, encode, load_training_set, split_out_of_time
from training.evaluate import (
    class_table,
    metrics,
    reliability_plot,
    score_by_city_plot,
    shap_summary_plot,
    slices,
    strictly_increasing,
)
from training.models import WoEScorecard, fit_booster, points_table
from training.monitor import REFERENCE_ARTIFACT
from training.registry import TEST_ROWS, log_scoring_model, use_tracking
from training.scoring import make_scoring_model

logger = logging.getLogger(__name__)

#: Prefer the additive model unless the tree model beats it by more than this on validation.
ADDITIVE_PREFERENCE = 0.002


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

    @classmethod
    def from_toml(cls, path: Path) -> TrainConfig:
        d = tomllib.loads(path.read_text())
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
            )
        except KeyError as e:
            raise ValueError(f"{path}: missing setting {e}") from e


@dataclass
class TrainResult:
    run_id: str
    version: str | None  # None when a check failed: the run is FAILED, nothing registered
    chosen: str
    test_metrics: dict
    checks_passed: bool
    summary: dict


def _auc(split: Split, p: np.ndarray) -> float:
    return float(roc_auc_score(split.y, p))


def train(
    config: TrainConfig,
    tracking_uri: str,
    artifact_root: Path,
    registered_model: str = "credref-reference",
) -> TrainResult:
    df, manifest = load_training_set(config.dataset)
    if manifest["catalogue_version"] != catalogue_version():
        raise ValueError(
            f"training set was built with catalogue {manifest['catalogue_version']}, "
            f"the code has {catalogue_version()}: rebuild it with `credref dataset`"
        )
    train_s, valid_s, test_s = split_out_of_time(df, config.train_end, config.valid_end)
    use_tracking(tracking_uri, artifact_root, config.experiment)

    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        mlflow.log_params(
            {
                "train_end": config.train_end,
                "valid_end": config.valid_end,
                "test_as_of": test_s.dates[0],
                "seed": config.seed,
                "rounds": config.rounds,
                "catalogue_version": catalogue_version(),
                "train_rows": len(train_s.y),
                "valid_rows": len(valid_s.y),
                "test_rows": len(test_s.y),
                **{f"lgb_{k}": v for k, v in config.params.items()},
            }
        )
        boosters = {
            k: fit_booster(k, train_s, valid_s, config.params, config.seed, config.rounds)
            for k in ("monotone", "additive", "unconstrained")
        }
        valid_auc = {
            k: _auc(valid_s, b.predict(valid_s.X, raw_score=True)) for k, b in boosters.items()
        }
        test_auc = {
            k: _auc(test_s, b.predict(test_s.X, raw_score=True)) for k, b in boosters.items()
        }
        woe = WoEScorecard().fit(train_s.X, train_s.y)
        test_auc["woe_scorecard"] = _auc(test_s, woe.predict_proba(test_s.X))
        oracle_auc = (
            _auc(test_s, test_s.meta.oracle_pd.to_numpy())
            if test_s.meta.oracle_pd.notna().all()
            else None
        )

        if valid_auc["monotone"] > valid_auc["additive"] + ADDITIVE_PREFERENCE:
            chosen = "monotone"
            why = (
                f"monotone tree model beats the additive one on validation AUC by "
                f"{valid_auc['monotone'] - valid_auc['additive']:.4f} > {ADDITIVE_PREFERENCE}"
            )
        else:
            chosen = "additive"
            why = (
                f"additive model within {ADDITIVE_PREFERENCE} of the tree model on validation AUC "
                f"({valid_auc['additive']:.4f} vs {valid_auc['monotone']:.4f}): exact points table, no TreeSHAP"
            )
        booster = boosters[chosen]
        points = points_table(booster, test_s.X) if chosen == "additive" else None
        model = make_scoring_model(booster, chosen, valid_s.X, valid_s.y, points)
        checks = run_checks(booster, test_s.X, points, seed=config.seed)

        # The features exactly as the pipeline produces them: what callers will send.
        raw_test = df[df.as_of == test_s.meta.as_of.iloc[0]][list(FEATURE_NAMES)].reset_index(
            drop=True
        )
        scored = model.score_frame(raw_test)
        p = scored["pd"].to_numpy()
        m = metrics(test_s.y, p)
        classes = class_table(test_s.y, scored["risk_class"].to_numpy())
        sl = slices(test_s.X, test_s.y, p, scored["risk_class"].to_numpy())
        summary = {
            "chosen": chosen,
            "why": why,
            "valid_auc": valid_auc,
            "test_auc": test_auc,
            "oracle_auc": oracle_auc,
            "oracle_ratio": (m["auc"] / oracle_auc) if oracle_auc else None,
            "constraint_cost_auc": test_auc["unconstrained"] - test_auc["monotone"],
            "additivity_cost_auc": test_auc["unconstrained"] - test_auc["additive"],
            "class_rates_increasing": strictly_increasing(classes.observed_rate),
            "checks": checks.__dict__,
            "check_failures": checks.failures(),
        }
        if config.dataset_all_published is not None:
            summary["all_published"] = _policy_cost(config, chosen, test_s)
        mlflow.log_metrics({f"test_{k}": v for k, v in m.items()})
        mlflow.log_metrics({f"valid_auc_{k}": v for k, v in valid_auc.items()})
        mlflow.log_metrics({f"test_auc_{k}": v for k, v in test_auc.items()})
        if oracle_auc:
            mlflow.log_metrics(
                {"test_oracle_auc": oracle_auc, "test_oracle_ratio": summary["oracle_ratio"]}
            )
        for c, r in zip(classes["class"], classes.observed_rate, strict=True):
            mlflow.log_metric(f"test_rate_class_{c}", float(r))
        mlflow.set_tags(
            {
                "chosen_model": chosen,
                "selection_reason": why,
                "checks_passed": str(checks.passed).lower(),
                "check_failures": "; ".join(checks.failures()) or "none",
                "class_rates_increasing": str(summary["class_rates_increasing"]).lower(),
            }
        )

        # artefacts: catalogues, points table, plots, card, manifest, test rows for the gate
        (out / "catalogue.json").write_text(
            json.dumps(catalogue_dict(), ensure_ascii=False, indent=2)
        )
        (out / "training_set_manifest.json").write_text(json.dumps(manifest, indent=2))
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        classes.to_csv(out / "class_rates.csv", index=False)
        sl.to_csv(out / "slices.csv", index=False)
        if points is not None:
            points.as_frame(-model.scale.factor * model.calib_a).to_csv(
                out / "points_table.csv", index=False
            )
        reliability_plot(test_s.y, p, out / "calibration.png")
        score_by_city_plot(
            test_s.X["city"].astype(str).to_numpy(),
            scored["score"].to_numpy(),
            out / "score_by_city.png",
        )
        sample = test_s.X.sample(n=min(3000, len(test_s.X)), random_state=config.seed)
        shap_summary_plot(model.contributions(encode(sample)), sample, out / "shap_summary.png")
        (out / "model_card.md").write_text(
            model_card(config, summary, m, classes, sl, test_s, manifest)
        )
        mlflow.log_artifacts(str(out))
        rows = raw_test.assign(label=test_s.y)
        rows_path = out / "test_rows.parquet"
        rows.to_parquet(rows_path)
        mlflow.log_artifact(str(rows_path), artifact_path=TEST_ROWS.rsplit("/", 1)[0])
        # The monitoring reference: a sample of the training rows the model learned from.
        ref_path = out / "reference.parquet"
        raw_train = df[df.as_of <= config.train_end][["as_of", *FEATURE_NAMES]]
        raw_train.sample(n=min(len(raw_train), 200_000), random_state=config.seed).reset_index(
            drop=True
        ).to_parquet(ref_path)
        mlflow.log_artifact(str(ref_path), artifact_path=REFERENCE_ARTIFACT.rsplit("/", 1)[0])
        if not checks.passed:
            # The run stays in MLflow as evidence, marked FAILED; nothing is registered.
            logger.error("training checks failed: %s", "; ".join(checks.failures()))
            mlflow.end_run(status="FAILED")
            return TrainResult(run.info.run_id, None, chosen, m, False, summary)
        version = log_scoring_model(model, rows.drop(columns="label").head(50), registered_model)
        return TrainResult(run.info.run_id, version, chosen, m, checks.passed, summary)


def _policy_cost(config: TrainConfig, kind: str, test_legal: Split) -> dict:
    """The same model allowed to see every published record (measurement only)."""
    assert config.dataset_all_published is not None
    df, _ = load_training_set(config.dataset_all_published)
    tr, va, te = split_out_of_time(df, config.train_end, config.valid_end)
    if list(te.meta.uscc) != list(test_legal.meta.uscc):
        raise ValueError("the all-published training set covers other test households")
    b = fit_booster(kind, tr, va, config.params, config.seed, config.rounds)
    auc_all = _auc(te, b.predict(te.X, raw_score=True))
    return {"test_auc_all_published": auc_all}


def model_card(config, summary, m, classes, sl, test_s, manifest) -> str:
    def table(df: pd.DataFrame) -> str:
        return (
            df.to_markdown(index=False, floatfmt=".4f")
            if hasattr(df, "to_markdown")
            else df.to_string()
        )

    return f"""# Model card: credref reference score

## Intended use
A credit-risk *reference* for payment platforms opening merchant collection codes for
individual businesses in the pilot cities: probability of an adverse regulator record
(penalty above the minor kind, abnormal marking, serious listing, revocation, forced
deregistration) published in the next 12 months; score 0-1000 (higher = lower risk);
class A-D; at most four reason codes. Not for any other decision; never the only input.

## Data
Training set `{config.dataset}` (catalogue {manifest["catalogue_version"]}, policy
{manifest["policy"]}, source fingerprint {manifest["source_fingerprint"][:16]}...).
Out of time: train as-of dates <= {config.train_end}, validation to {config.valid_end},
test on {test_s.dates[0]} ({len(test_s.y):,} households).

## Model
Chosen: **{summary["chosen"]}** ({summary["why"]}). LightGBM with the catalogue's monotone
constraints; Platt calibration on validation; classes cut at validation PD quantiles
40/70/90%; serious-list households are class D by policy.

## Out-of-time test metrics
{json.dumps({k: round(v, 4) for k, v in m.items()}, indent=2)}

Oracle AUC on the same rows: {summary["oracle_auc"]}; oracle ratio {summary["oracle_ratio"]}.
Test AUC by model: {json.dumps({k: round(v, 4) for k, v in summary["test_auc"].items()})}.

## Observed adverse-event rate by class
{classes.to_string(index=False)}

## Slices
{sl.to_string(index=False)}

## Legal-use policy
Features use only records published on or before the as-of date and usable on it
(DOMAIN.md §3): penalties while in publicity and not repaired or withdrawn; markings
until restored; serious listings until removed; spot checks within 3 years; report
content only when published. No personal information is a model input.

## Limitations
Trained and evaluated on a synthetic domain with a known risk process; the frailty
(unobserved heterogeneity) bounds what any model can reach (see the oracle ratio).
Calibration is fitted on the validation window and can drift; monitor before use.
"""
