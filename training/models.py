"""The model family: LightGBM with the catalogue's monotone constraints, its additive
(glass-box) variant with an exact points table, an unconstrained LightGBM (only to
measure what the constraints cost), and a logistic WoE scorecard baseline.
"""

from __future__ import annotations

import os
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression

from scoring.model import PointsTable
from scoring.spec import CREDREF, ModelSpec
from training.data import Split

KINDS = ("monotone", "additive", "unconstrained")

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "lambda_l2": 1.0,
    "cat_smooth": 10.0,
    "max_bin": 255,
    "verbose": -1,
    "num_threads": 2,
    "deterministic": True,
    "force_row_wise": True,
}


def _threads() -> dict:
    """LightGBM's threads: the default 2, or fewer when ``OMP_NUM_THREADS`` asks for fewer
    (``make test`` runs two test processes on 2 cores with one each: OpenMP threads spin
    while they wait, and four of them on two cores made training three times slower)."""
    asked = os.environ.get("OMP_NUM_THREADS", "")
    if asked.isdigit() and 0 < int(asked) < DEFAULT_PARAMS["num_threads"]:
        return {"num_threads": int(asked)}
    return {}


def scaled_defaults(n_train: int) -> dict:
    """Parameters that follow the training-set size: leaves of at least 0.05% of rows (a
    fixed 200 is too coarse for a thousand rows and too fine for millions)."""
    return {
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": int(np.clip(round(n_train * 0.0005), 20, 2000)),
        "lambda_l2": 1.0,
        "feature_fraction": 1.0,
    }


def lgb_params(
    kind: str, params: dict, seed: int, spec: ModelSpec = CREDREF, n_train: int = 400_000
) -> dict:
    """LightGBM's parameters for ``kind``: the fixed ones, the size-aware defaults for
    ``n_train`` rows, then ``params`` (which win)."""
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")
    p = {**DEFAULT_PARAMS, **_threads(), **scaled_defaults(n_train), **params, "seed": seed}
    if kind in ("monotone", "additive"):
        p["monotone_constraints"] = list(spec.monotone)
        p["monotone_constraints_method"] = "intermediate"
    if kind == "additive":
        p["interaction_constraints"] = [[i] for i in range(len(spec.features))]
    return p


def fit_booster(
    kind: str,
    train: Split,
    valid: Split,
    params: dict,
    seed: int,
    rounds: int = 2000,
    patience: int = 100,
    callbacks: list | None = None,
    spec: ModelSpec = CREDREF,
) -> lgb.Booster:
    """Fit with early stopping on the (later) validation snapshots (``callbacks``: more
    LightGBM callbacks, e.g. a tuning trial's pruning), under ``spec``'s monotone
    directions and categoricals (its matrix: :func:`training.data.model_matrix`)."""
    p = lgb_params(kind, params, seed, spec, n_train=len(train.y))
    cats = spec.categorical
    dtrain = lgb.Dataset(train.X, train.y, categorical_feature=cats, free_raw_data=False)
    dvalid = lgb.Dataset(valid.X, valid.y, reference=dtrain, categorical_feature=cats)
    return lgb.train(
        p,
        dtrain,
        num_boost_round=rounds,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(patience, verbose=False), *(callbacks or [])],
    )


# --- the points table of an additive booster -----------------------------------------


def _split_features(node: dict, acc: dict[int, set]) -> None:
    if "split_feature" in node:
        f = node["split_feature"]
        if node["decision_type"] == "<=":
            acc.setdefault(f, set()).add(float(node["threshold"]))
        else:
            acc.setdefault(f, set())
        _split_features(node["left_child"], acc)
        _split_features(node["right_child"], acc)


def points_table(
    booster: lgb.Booster, template: pd.DataFrame, spec: ModelSpec = CREDREF
) -> PointsTable:
    """Build the exact points table of an additive booster.

    Args:
        booster: a booster trained with one-feature interaction constraints.
        template: one row of model-matrix input (values of other features do not matter
            to an additive model; it only supplies dtypes).
    """
    thresholds: dict[int, set] = {}
    for tree in booster.dump_model()["tree_info"]:
        per_tree: dict[int, set] = {}
        _split_features(tree["tree_structure"], per_tree)
        if len(per_tree) > 1:
            raise ValueError("the booster is not additive: a tree splits on several features")
        for f, ts in per_tree.items():
            thresholds.setdefault(f, set()).update(ts)

    def contrib(name: str, values: list) -> np.ndarray:
        frame = pd.concat([template.iloc[[0]]] * len(values), ignore_index=True)
        if name in spec.categories:
            frame[name] = pd.Categorical(values, categories=list(spec.categories[name]))
        else:
            frame[name] = np.asarray(values, dtype=float)
        return booster.predict(frame, pred_contrib=True)

    numeric, categorical = {}, {}
    base = None
    for j, name in enumerate(spec.features):
        if name in spec.categories:
            cats = list(spec.categories[name])
            c = contrib(name, [*cats, None])
            categorical[name] = {
                "points": dict(zip(cats, c[:-1, j].tolist(), strict=True)),
                "nan": float(c[-1, j]),
            }
        else:
            th = sorted(thresholds.get(j, set()))
            reps = [*th, (th[-1] + 1.0) if th else 0.0, float("nan")]
            c = contrib(name, reps)
            numeric[name] = {"thresholds": th, "points": c[:-1, j].tolist(), "nan": float(c[-1, j])}
        base = float(c[0, -1])
    assert base is not None
    return PointsTable(base, numeric, categorical, spec)


# --- the industry's baseline -------------------------------------------------------------


class WoEScorecard:
    """Logistic regression on weight-of-evidence bins (optbinning), the industry baseline.

    ``__init__`` only stores parameters; fitted attributes end in ``_``.
    """

    def __init__(self, max_n_bins: int = 8, C: float = 1.0, spec: ModelSpec = CREDREF):
        self.max_n_bins = max_n_bins
        self.C = C
        self.spec = spec

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> WoEScorecard:
        from optbinning import BinningProcess  # seconds to load (OR-Tools): the scorecard only

        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        Xo = X.copy()
        cats = self.spec.categorical
        for c in cats:
            Xo[c] = Xo[c].astype("object")
        self.binning_ = BinningProcess(
            list(X.columns), categorical_variables=cats, max_n_bins=self.max_n_bins
        ).fit(Xo, y)
        self.logit_ = LogisticRegression(C=self.C, max_iter=1000).fit(
            self.binning_.transform(Xo), y
        )
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:

        if not hasattr(self, "logit_"):
            raise NotFittedError("WoEScorecard is not fitted; call fit first")
        Xo = X.copy()
        for c in self.spec.categorical:
            Xo[c] = Xo[c].astype("object")
        return self.logit_.predict_proba(self.binning_.transform(Xo))[:, 1]
