"""``credref train``: fit the model family out of time, check, evaluate, log, register.

Same config and seed give the same model (LightGBM runs deterministic).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import lightgbm as lgb
import mlflow
import mlflow.data
import numpy as np
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import infer_signature
from mlflow.types import ColSpec, Schema

from features.catalogue import catalogue_dict
from scoring.model import PointsTable, ScoringModel, encode
from scoring.spec import ModelSpec
from training.by_month import by_month, worst
from training.calibration import make_scoring_model
from training.checks import CheckReport, run_checks
from training.config import TrainConfig
from training.data import Split, load_training_set, split_out_of_time
from training.evaluate import (
    auc,
    class_table,
    metrics,
    slice_frame,
    slice_table,
    strictly_increasing,
)
from training.guide import guide_markdown, score_guide
from training.models import WoEScorecard, fit_booster, lgb_params, points_table
from training.plots import reliability_plot, score_by_city_plot, shap_summary_plot
from training.registry import (
    REFERENCE_ARTIFACT,
    TEST_ROWS,
    TRAINED_BY,
    code_version,
    log_scoring_model,
    mlflow_advice_silenced,
    record_trainer,
    use_tracking,
)
from training.tuning import TUNED_KINDS, tune
from training.validation_stats import auc_delong

logger = logging.getLogger(__name__)

#: Prefer the additive model unless the tree model beats it by more than this on validation.
ADDITIVE_PREFERENCE = 0.002


@dataclass
class TrainResult:
    run_id: str
    version: str | None  # None when a check failed: the run is FAILED, nothing registered
    chosen: str
    test_metrics: dict
    checks_passed: bool
    summary: dict


@dataclass
class Splits:
    train: Split
    valid: Split
    test: Split


@dataclass
class Fitted:
    """The model family fitted, compared, and the chosen one made a scoring artefact."""

    chosen: str
    why: str
    valid_auc: dict
    test_auc: dict
    oracle_auc: float | None
    model: ScoringModel
    points: PointsTable | None
    checks: CheckReport


@dataclass
class Evaluation:
    """The chosen model on the out-of-time test rows, as the pipeline produces them."""

    raw_test: pd.DataFrame
    scored: pd.DataFrame
    metrics: dict
    classes: pd.DataFrame
    slices: pd.DataFrame
    summary: dict


def _auc(split: Split, p: np.ndarray) -> float:
    a = auc(split.y, p)
    if a is None:
        raise ValueError(f"the {split.name} split has only one outcome class: AUC is undefined")
    return a


def _oracle_auc(test: Split) -> float | None:
    """The oracle's AUC on the test rows it covers. As known on T a few households still
    look operating whose exit reached the system later: the truth has no value for them."""
    if "oracle_pd" not in test.meta:
        return None
    oracle = test.meta.oracle_pd.to_numpy()
    known = ~np.isnan(oracle)
    if not known.any():
        return None
    return auc(test.y[known], oracle[known])


def train(
    config: TrainConfig,
    tracking_uri: str,
    artifact_root: Path,
    registered_model: str = "credref-reference",
    trained_by: str | None = None,
) -> TrainResult:
    """Fit and select -> evaluate -> log -> register, in one MLflow run.

    ``trained_by`` (default: the OS user) is recorded on the run and the version, for
    the four-eyes rule at promotion (``training.registry.promote``)."""
    trained_by = trained_by or getpass.getuser()
    df, manifest = load_training_set(config.dataset)
    if manifest["catalogue_version"] != config.spec.version:
        raise ValueError(
            f"training set was built with catalogue {manifest['catalogue_version']}, "
            f"the spec is {config.spec.version}: rebuild it (`credref dataset` for credref's)"
        )
    splits = Splits(*split_out_of_time(df, config.train_end, config.valid_end, config.spec))
    check_params(config, splits.train)
    use_tracking(tracking_uri, artifact_root, config.experiment)
    name = f"train {config.spec.name} to {config.valid_end}"  # what was trained, on what
    with mlflow.start_run(run_name=name) as run, tempfile.TemporaryDirectory() as tmp:
        _log_provenance(config, df)
        _log_params(config, splits)
        config = apply_tuning(config, splits)
        fitted = fit_and_select(config, splits)
        evaluation = evaluate(config, fitted, df, splits)
        log_run(config, fitted, evaluation, splits, manifest, df, Path(tmp))
        mlflow.set_tag(TRAINED_BY, trained_by)
        return register(run.info.run_id, fitted, evaluation, registered_model, trained_by)


def check_params(config: TrainConfig, train: Split) -> None:
    """LightGBM's verdict on the parameters before any run starts: a wrong value is an
    error naming it, not a FAILED MLflow run."""
    sample = train.X.head(200)
    for kind in ("monotone", "additive", "unconstrained"):
        params = lgb_params(kind, config.params_for(kind), config.seed, config.spec, len(train.y))
        data = lgb.Dataset(sample, train.y[:200], categorical_feature=config.spec.categorical)
        try:
            lgb.train(params, data, num_boost_round=1)
        except lgb.basic.LightGBMError as e:
            raise ValueError(f"LightGBM refuses the [model.params]: {e}") from e


def apply_tuning(config: TrainConfig, s: Splits) -> TrainConfig:
    """The config with the best parameters of a search, if it asks for one."""
    if config.trials <= 0:
        return config

    found, said = {}, []
    for kind in TUNED_KINDS:
        t = tune(
            s.train,
            s.valid,
            config.params,
            config.trials,
            config.seed,
            config.rounds,
            kind,
            config.spec,
        )
        mlflow.log_params({f"tuned_{kind}_{k}": v for k, v in t.params.items()})
        mlflow.log_metrics(
            {f"tuning_best_valid_auc_{kind}": t.valid_auc, f"tuning_pruned_{kind}": t.pruned}
        )
        found[kind] = t.params
        said.append(t.summary(kind))
        mlflow.set_tag(f"tuning_{kind}", said[-1])
    return replace(config, kind_params=found, tuning=tuple(said))


def _log_provenance(config: TrainConfig, df: pd.DataFrame) -> None:
    """The code's commit and the training set as the run's input (MLflow's dataset
    tracking: its source, a digest and its schema)."""
    commit = code_version()
    if commit:
        mlflow.set_tag("mlflow.source.git.commit", commit)
    with mlflow_advice_silenced():
        mlflow.log_input(training_set_input(config.dataset, df), context="training")


def training_set_input(path: Path, df: pd.DataFrame) -> MetaDataset:
    """The training set as MLflow knows a dataset: its source, a digest of every row, its
    schema. Not ``mlflow.data.from_pandas``: it infers the schema value by value and maps
    every value for a digest of the first 10,000 rows, most of a whole training run at
    the demo's two million rows (bench/RESULTS.md); here the types come from a sample,
    whether a column may be empty from the whole frame, and the digest hashes every row."""
    sample = infer_signature(df.head(1000)).inputs
    nulls = df.isna().any()
    schema = Schema(
        [ColSpec(c.type, c.name, required=not bool(nulls[c.name])) for c in sample.inputs]
    )
    rows = pd.util.hash_pandas_object(df, index=False).to_numpy()
    digest = hashlib.sha256(rows.tobytes() + ",".join(df.columns).encode()).hexdigest()[:8]
    return MetaDataset(resolve_dataset_source(str(path)), Path(path).name, digest, schema)


def _log_params(config: TrainConfig, splits: Splits) -> None:
    mlflow.log_params(
        {
            "train_end": config.train_end,
            "valid_end": config.valid_end,
            "test_from": splits.test.dates[0],
            "test_to": splits.test.dates[-1],
            "seed": config.seed,
            "rounds": config.rounds,
            "class_bands": ",".join(f"{q:g}" for q in config.class_bands),
            "catalogue_version": config.spec.version,
            "train_rows": len(splits.train.y),
            "valid_rows": len(splits.valid.y),
            "test_rows": len(splits.test.y),
            **{f"lgb_{k}": v for k, v in config.params.items()},
        }
    )


def fit_and_select(config: TrainConfig, s: Splits) -> Fitted:
    """Fit every kind, compare out of time, prefer the additive model unless the tree
    model is clearly better, calibrate it and run the checks."""
    spec = config.spec
    boosters = {
        k: fit_booster(
            k, s.train, s.valid, config.params_for(k), config.seed, config.rounds, spec=spec
        )
        for k in ("monotone", "additive", "unconstrained")
    }
    valid_auc = {
        k: _auc(s.valid, b.predict(s.valid.X, raw_score=True)) for k, b in boosters.items()
    }
    test_auc = {k: _auc(s.test, b.predict(s.test.X, raw_score=True)) for k, b in boosters.items()}
    woe = WoEScorecard(spec=spec).fit(s.train.X, s.train.y)
    test_auc["woe_scorecard"] = _auc(s.test, woe.predict_proba(s.test.X))
    oracle_auc = _oracle_auc(s.test)
    gain = valid_auc["monotone"] - valid_auc["additive"]
    if gain > ADDITIVE_PREFERENCE:
        chosen = "monotone"
        why = (
            f"monotone tree model beats the additive one on validation AUC by "
            f"{gain:.4f} > {ADDITIVE_PREFERENCE}"
        )
    else:
        chosen = "additive"
        why = (
            f"additive model within {ADDITIVE_PREFERENCE} of the tree model on validation AUC "
            f"({valid_auc['additive']:.4f} vs {valid_auc['monotone']:.4f}): exact points table, no TreeSHAP"
        )
    booster = boosters[chosen]
    points = points_table(booster, s.test.X, spec) if chosen == "additive" else None
    model = make_scoring_model(
        booster,
        chosen,
        s.valid.X,
        s.valid.y,
        points,
        config.class_bands,
        spec=spec,
        catalogue=spec.version,
    )
    checks = run_checks(booster, s.test.X, points, seed=config.seed, spec=spec)
    return Fitted(chosen, why, valid_auc, test_auc, oracle_auc, model, points, checks)


def evaluate(config: TrainConfig, f: Fitted, df: pd.DataFrame, s: Splits) -> Evaluation:
    """Score the test rows (every as-of date of the test year) as callers will send them;
    metrics over the year and month by month, class rates, slices, the score guide."""
    test_rows = df[df.as_of > config.valid_end].reset_index(drop=True)
    raw_test = test_rows[list(config.spec.features)]
    # PD, score and class are what the metrics, tables and guide read; the reasons (SHAP
    # contributions of every test row, a third of a training run's time) are not needed
    scored = f.model.score_frame(raw_test, with_reasons=False)
    m = metrics(s.test.y, scored["pd"].to_numpy())
    classes = class_table(s.test.y, scored["risk_class"].to_numpy())
    sl = pd.DataFrame(slice_table(slice_frame(s.test.X, scored, s.test.y, config.spec)))
    months = by_month(test_rows, s.test.y, scored, f.model.spec)
    span = f"{s.test.dates[0]} to {s.test.dates[-1]} ({len(s.test.dates)} as-of dates)"
    f.model.guide = score_guide(f.model, scored, s.test.y, span)
    summary = {
        "chosen": f.chosen,
        "why": f.why,
        "valid_auc": f.valid_auc,
        "test_auc": f.test_auc,
        "oracle_auc": f.oracle_auc,
        "oracle_ratio": (m["auc"] / f.oracle_auc) if f.oracle_auc else None,
        "constraint_cost_auc": f.test_auc["unconstrained"] - f.test_auc["monotone"],
        "additivity_cost_auc": f.test_auc["unconstrained"] - f.test_auc["additive"],
        "class_rates_increasing": strictly_increasing(classes.observed_rate),
        "class_bands": list(config.class_bands),
        "by_month": months.to_dict(orient="records"),
        **worst(months),
        "checks": f.checks.__dict__,
        "check_failures": f.checks.failures(),
        "tuning": list(config.tuning),
    }
    if config.dataset_all_published is not None:
        summary["all_published"] = _policy_cost(config, f.chosen, s.test)
    return Evaluation(raw_test, scored, m, classes, sl, summary)


def log_run(config, f: Fitted, ev: Evaluation, s: Splits, manifest, df, out: Path) -> None:
    """Metrics, tags and every artefact of the run, in MLflow."""
    mlflow.log_metrics({f"test_{k}": v for k, v in ev.metrics.items()})
    mlflow.log_metrics({f"valid_auc_{k}": v for k, v in f.valid_auc.items()})
    mlflow.log_metrics({f"test_auc_{k}": v for k, v in f.test_auc.items()})
    if f.oracle_auc:
        mlflow.log_metrics(
            {"test_oracle_auc": f.oracle_auc, "test_oracle_ratio": ev.summary["oracle_ratio"]}
        )
    for c, r in zip(ev.classes["class"], ev.classes.observed_rate, strict=True):
        mlflow.log_metric(f"test_rate_class_{c}", float(r))
    mlflow.log_metrics(
        {f"test_{k}": v for k, v in ev.summary.items() if k.startswith("worst_") and v is not None}
    )
    mlflow.set_tags(
        {
            "chosen_model": f.chosen,
            "selection_reason": f.why,
            "checks_passed": str(f.checks.passed).lower(),
            "check_failures": "; ".join(f.checks.failures()) or "none",
            "class_rates_increasing": str(ev.summary["class_rates_increasing"]).lower(),
        }
    )
    _write_artefacts(config, f, ev, s, manifest, out)
    mlflow.log_artifacts(str(out))
    _log_rows(config, ev, s, df, out)


def _write_artefacts(config, f: Fitted, ev: Evaluation, s: Splits, manifest, out: Path) -> None:
    """Catalogue, manifest, summary, class rates, slices, points, plots, model card."""
    catalogue = (
        catalogue_dict() if config.spec.name == "credref" else json.loads(config.spec.to_json())
    )
    (out / "catalogue.json").write_text(json.dumps(catalogue, ensure_ascii=False, indent=2))
    (out / "training_set_manifest.json").write_text(json.dumps(manifest, indent=2))
    (out / "summary.json").write_text(json.dumps(ev.summary, indent=2, default=str))
    ev.classes.to_csv(out / "class_rates.csv", index=False)
    ev.slices.to_csv(out / "slices.csv", index=False)
    pd.DataFrame(ev.summary["by_month"]).to_csv(out / "by_month.csv", index=False)
    (out / "score_guide.json").write_text(
        json.dumps(f.model.guide, ensure_ascii=False, indent=2) + "\n"
    )
    if f.points is not None:
        f.points.as_frame(-f.model.scale.factor * f.model.calib_a).to_csv(
            out / "points_table.csv", index=False
        )
    reliability_plot(s.test.y, ev.scored["pd"].to_numpy(), out / "calibration.png")
    if config.spec.slices:  # the score's spread over the first slicing dimension (city)
        by = s.test.X[config.spec.slices[0]].astype(str).to_numpy()
        score_by_city_plot(by, ev.scored["score"].to_numpy(), out / "score_by_city.png")
    sample = s.test.X.sample(n=min(3000, len(s.test.X)), random_state=config.seed)
    contributions = f.model.contributions(encode(sample, f.model.spec))
    shap_summary_plot(contributions, sample, out / "shap_summary.png")
    (out / "model_card.md").write_text(
        model_card(
            config,
            ev.summary,
            ev.metrics,
            ev.classes,
            ev.slices,
            s.test,
            manifest,
            auc_delong(s.test.y, ev.scored["pd"].to_numpy()),
            f.model.guide,
        )
    )


def _log_rows(config, ev: Evaluation, s: Splits, df: pd.DataFrame, out: Path) -> None:
    """The test rows (what the promotion gate scores) and the monitoring reference (a
    sample of the training rows the model learned from)."""
    rows_path = out / "test_rows.parquet"
    ev.raw_test.assign(label=s.test.y).to_parquet(rows_path)
    mlflow.log_artifact(str(rows_path), artifact_path=TEST_ROWS.rsplit("/", 1)[0])
    ref_path = out / "reference.parquet"
    raw_train = df[df.as_of <= config.train_end][["as_of", *config.spec.features]]
    raw_train.sample(n=min(len(raw_train), 200_000), random_state=config.seed).reset_index(
        drop=True
    ).to_parquet(ref_path)
    mlflow.log_artifact(str(ref_path), artifact_path=REFERENCE_ARTIFACT.rsplit("/", 1)[0])


def register(
    run_id: str, f: Fitted, ev: Evaluation, registered_model: str, trained_by: str
) -> TrainResult:
    """A new registered version, unless a check failed (the run then stays as evidence,
    marked FAILED, and nothing is registered)."""
    if not f.checks.passed:
        logger.error("training checks failed: %s", "; ".join(f.checks.failures()))
        mlflow.end_run(status="FAILED")
        return TrainResult(run_id, None, f.chosen, ev.metrics, False, ev.summary)
    version = log_scoring_model(f.model, ev.raw_test.head(50), registered_model)
    record_trainer(registered_model, version, trained_by)
    return TrainResult(run_id, version, f.chosen, ev.metrics, True, ev.summary)


def _policy_cost(config: TrainConfig, kind: str, test_legal: Split) -> dict:
    """The same model allowed to see every published record (measurement only)."""
    assert config.dataset_all_published is not None
    df, _ = load_training_set(config.dataset_all_published)
    tr, va, te = split_out_of_time(df, config.train_end, config.valid_end)
    if list(te.meta.uscc) != list(test_legal.meta.uscc):
        raise ValueError("the all-published training set covers other test households")
    b = fit_booster(kind, tr, va, config.params_for(kind), config.seed, config.rounds)
    auc_all = _auc(te, b.predict(te.X, raw_score=True))
    return {"test_auc_all_published": auc_all}


def _month_table(rows: list[dict], unit: str) -> str:
    """The by-month figures as a markdown table."""

    def fmt(v, spec: str) -> str:
        return "-" if v is None or v != v else format(v, spec)

    out = [
        f"| as of | {unit} | bad rate | mean PD | AUC | oracle ratio | ECE | class A | class D "
        "| class moves without an event (since the month before) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    out += [
        f"| {r['as_of']} | {r['n']:,} | {fmt(r['base_rate'], '.4f')} | {fmt(r['mean_pd'], '.4f')} "
        f"| {fmt(r['auc'], '.4f')} | {fmt(r['oracle_ratio'], '.4f')} | {fmt(r['ece'], '.4f')} "
        f"| {fmt(r['share_A'], '.1%')} | {fmt(r['share_D'], '.1%')} "
        f"| {fmt(r['class_moves_without_event'], '.2%')} |"
        for r in rows
    ]
    return "\n".join(out)


#: The card's sections that say what credref's model is for; another catalogue's card
#: says what its spec says (:func:`_card_texts`).
CREDREF_CARD = {
    "title": "credref reference score",
    "unit": "households",
    "intended_use": """A credit-risk *reference* for payment platforms opening merchant collection codes for
individual businesses in the pilot cities: probability of an adverse regulator record
(penalty above the minor kind, abnormal marking, serious listing, revocation, forced
deregistration) published in the next 12 months; score 0-1000 (higher = lower risk);
class A-D; at most four reason codes, each with what the household can do about it.""",
    "out_of_scope": """Any other decision; a decision on this score alone; households outside the register or
records no longer usable; inferring the underlying records from answers.""",
    "factors": """City, organisational form, industry and registration age: the slices below. The model
never reads personal information, and place, industry and form are never given as reasons.""",
    "data_rules": """Features use only records published on or before the as-of
date and usable on it (DOMAIN.md §3): penalties while in publicity and not repaired or
withdrawn; markings until restored; serious listings until removed; spot checks within 3
years; report content only when published.""",
    "caveats": """Trained and evaluated on a synthetic domain with a known risk process; the frailty
(unobserved heterogeneity) bounds what any model can reach (see the oracle ratio).
Outcomes are published adverse records, not credit defaults. Calibration is fitted on the
validation window and can drift: monitor (`credref monitor`) and validate
(`credref validate`) before and during use.""",
}


def _card_texts(spec: ModelSpec) -> dict:
    if spec.name == "credref":
        return CREDREF_CARD
    return {
        "title": f"{spec.name} (trained with credref's core)",
        "unit": "rows",
        "intended_use": "The probability of the training set's outcome: "
        f"{(spec.outcome or 'its label').rstrip('.')}; "
        "score 0-1000 (higher = lower risk), class A-D, reasons from the spec.",
        "out_of_scope": "A decision on this score alone; rows unlike the training set.",
        "factors": f"Slices by {', '.join(spec.slices) or 'none'} (below).",
        "data_rules": "The features as the training set gives them.",
        "caveats": "Calibration is fitted on the validation rows and can drift.",
    }


def model_card(config, summary, m, classes, sl, test_s, manifest, auc_ci: dict, guide) -> str:
    """The model card, under the model-card headings (Mitchell et al., 2019)."""
    lo, hi = auc_ci["ci"]
    texts = _card_texts(config.spec)
    return f"""# Model card: {texts["title"]}

## Intended use
{texts["intended_use"]}

### What a class means
{guide["rating_philosophy"]}

{guide["override"]}

### Score guide
Outcome: {guide["outcome"]} Observed over {guide["observed_over"]}.

{guide_markdown(guide, texts["unit"])}

## Out-of-scope use
{texts["out_of_scope"]}

## Factors
{texts["factors"]}

## Metrics, with intervals
Out-of-time test ({len(test_s.y):,} {texts["unit"]} on every as-of date from
{test_s.dates[0]} to {test_s.dates[-1]}): AUC {auc_ci["auc"]:.4f} (95% CI {lo:.4f}-{hi:.4f},
DeLong) for the PD on the day.
{json.dumps({k: round(v, 4) for k, v in m.items()}, indent=2)}

Oracle AUC on the same rows: {summary["oracle_auc"]}; oracle ratio {summary["oracle_ratio"]}.
Test AUC by model: {json.dumps({k: round(v, 4) for k, v in summary["test_auc"].items()})}.
Chosen: **{summary["chosen"]}** ({summary["why"]}). LightGBM with the catalogue's monotone
constraints; Platt calibration on validation (the PD on the day; the standing to the
long-run rate); classes are fixed long-run PD bands
{"/".join(f"{100 * q:g}%" for q in config.class_bands)}; {guide["override"]}

Observed adverse-event rate by class over the test year:
{classes.to_string(index=False)}

### Quality on every day
Month by month over the test year (the PD's AUC and ECE; the class shares; among
{texts["unit"]} whose record features did not change since the month before, the share
whose class did). Worst month: AUC {summary["worst_month_auc"]:.4f}, ECE
{summary["worst_month_ece"]:.4f}, oracle ratio {summary["worst_month_oracle_ratio"]},
class moves without an event {summary["worst_month_class_moves_without_event"]}.

{_month_table(summary["by_month"], texts["unit"])}

## Data
Training set `{config.dataset}` (catalogue {manifest["catalogue_version"]}, policy
{manifest.get("policy", "-")}, source fingerprint {manifest.get("source_fingerprint", "-")[:16]}...).
Out of time: train as-of dates <= {config.train_end}, validation to {config.valid_end},
test on every as-of date after it ({test_s.dates[0]} to {test_s.dates[-1]}). {texts["data_rules"]}

## Slices
{sl.to_string(index=False)}

## Caveats
{texts["caveats"]}
"""
