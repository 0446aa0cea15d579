"""Fitting the scoring artefact's calibration and class cuts on validation rows (the
training side of :mod:`training.scoring`)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.catalogue import catalogue_version
from training.scoring import PointsTable, ScoreScale, ScoringModel, encode
from training.spec import CREDREF, ModelSpec

#: Cumulative shares of validation households at the class cuts A|B, B|C, C|D (40% A,
#: 30% B, 20% C, 10% D) unless the training config says otherwise.
DEFAULT_CLASS_SHARES = (0.4, 0.7, 0.9)


def fit_platt(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6, max_iter=1000).fit(margin.reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def make_scoring_model(
    booster: lgb.Booster,
    kind: str,
    valid_X: pd.DataFrame,
    valid_y: np.ndarray,
    points: PointsTable | None = None,
    class_shares: tuple[float, float, float] = DEFAULT_CLASS_SHARES,
    scale: ScoreScale | None = None,
    spec: ModelSpec = CREDREF,
    catalogue: str | None = None,
) -> ScoringModel:
    """Calibrate on validation and fix the class thresholds there (``catalogue``: the
    catalogue's version, credref's by default)."""
    margin = (
        points.margin(encode(valid_X, spec))
        if points is not None
        else booster.predict(valid_X, raw_score=True)
    )
    a, b = fit_platt(margin, valid_y)
    pd_valid = 1.0 / (1.0 + np.exp(-(a * margin + b)))
    q_ab, q_bc, q_cd = (float(np.quantile(pd_valid, q)) for q in class_shares)
    return ScoringModel(
        booster,
        kind,
        a,
        b,
        (q_ab, q_bc, q_cd),
        scale or ScoreScale(),
        points,
        catalogue or catalogue_version(),
        spec,
    )
