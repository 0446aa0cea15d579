"""The training and scoring core on a catalogue that is not credref's: a small generated
consumer-credit dataset with its own features, directions, categories, reasons and policy
override, trained (monotone and additive), checked, registered in a real sqlite MLflow
store, loaded back and scored, with no credref feature in sight."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from scoring.model import ScoringModel
from scoring.spec import CREDREF, ModelSpec
from training.calibration import make_scoring_model
from training.checks import run_checks
from training.data import Split, model_matrix
from training.models import fit_booster, points_table

SPEC = ModelSpec(
    features=("months_on_book", "late_payments", "utilisation", "region", "bankrupt"),
    monotone=(-1, 1, 1, 0, 1),
    categories={"region": ("north", "south", "east", "west")},
    reason_of={
        "months_on_book": "C1",
        "late_payments": "C2",
        "utilisation": "C2",
        "region": None,
        "bankrupt": "C3",
    },
    reasons=("C1", "C2", "C3"),
    no_adverse="C0",
    override_feature="bankrupt",
    override_reason="C3",
    name="consumer-credit",
)
PARAMS = {"min_data_in_leaf": 40, "num_leaves": 7, "learning_rate": 0.1}


def _data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "months_on_book": rng.integers(1, 120, n).astype(float),
            "late_payments": rng.poisson(0.6, n).astype(float),
            "utilisation": rng.uniform(0, 1.2, n),
            "region": rng.choice(SPEC.categories["region"], n),
            "bankrupt": (rng.uniform(size=n) < 0.02).astype(float),
        }
    )
    df.loc[rng.uniform(size=n) < 0.05, "utilisation"] = np.nan  # missing values occur
    logit = (
        -2.2
        - 0.015 * df.months_on_book
        + 0.8 * df.late_payments
        + 1.5 * df.utilisation.fillna(0.5)
        + 0.3 * (df.region == "south")
    )
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return df, y


def _split(name: str, n: int, seed: int) -> Split:
    df, y = _data(n, seed)
    return Split(name, model_matrix(df, SPEC), y, pd.DataFrame(index=df.index))


@pytest.mark.parametrize("kind", ["additive", "monotone"])
def test_a_model_on_another_catalogue_is_trained_checked_registered_and_scored(kind, tmp_path):
    import mlflow

    from training.registry import load_version, log_scoring_model, use_tracking

    train, valid, test = _split("train", 6000, 1), _split("valid", 3000, 2), _split("test", 3000, 3)
    booster = fit_booster(kind, train, valid, PARAMS, seed=7, rounds=300, spec=SPEC)
    points = points_table(booster, train.X.head(1), SPEC) if kind == "additive" else None
    report = run_checks(booster, train.X, points, spec=SPEC)
    assert report.passed, report.failures()
    assert set(report.monotonicity_violations) == {
        "months_on_book",
        "late_payments",
        "utilisation",
        "bankrupt",
    }

    model = make_scoring_model(
        booster, kind, valid.X, valid.y, points, spec=SPEC, catalogue="consumer-credit-1"
    )
    use_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", "foreign")
    with mlflow.start_run():
        version = log_scoring_model(model, test.X.head(50), "foreign-model")
    loaded = load_version("foreign-model", version).unwrap_python_model().model
    assert isinstance(loaded, ScoringModel) and loaded.spec == SPEC
    assert loaded.catalogue_version == "consumer-credit-1"

    scored = loaded.score_frame(test.X)
    pd.testing.assert_frame_equal(scored, model.score_frame(test.X))
    assert roc_auc_score(test.y, scored.pd) > 0.7
    codes = {c for r in scored.reasons for c in r.split(";")}
    assert codes <= {"C0", "C1", "C2", "C3"} and {"C1", "C2"} <= codes
    bankrupt = test.X.bankrupt.to_numpy() > 0
    assert bankrupt.any() and (scored.risk_class[bankrupt] == "D").all()
    assert scored.reasons[bankrupt].str.startswith("C3").all()
    assert not scored.reasons[~bankrupt].str.contains("C3").any()  # no feature but bankrupt


def test_a_spec_refuses_what_it_does_not_define_and_credrefs_is_the_default():
    with pytest.raises(ValueError, match="does not define"):
        ModelSpec(("a",), (1,), {}, {"a": "X9"}, ("X1",))
    with pytest.raises(ValueError, match="one monotone direction"):
        ModelSpec(("a", "b"), (1,), {}, {}, ())
    assert ModelSpec.from_json(CREDREF.to_json()) == CREDREF
    assert ModelSpec.from_json(SPEC.to_json()) == SPEC
    assert CREDREF.override_feature == "serious_listed" and CREDREF.override_reason == "R08"
