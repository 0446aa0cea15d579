"""Fitting the scoring artefact's calibrations, score scale and class bands on validation
rows (the training side of :mod:`scoring.model`)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from features.catalogue import catalogue_version
from scoring.model import CALENDAR_REFERENCE, PointsTable, ScoreScale, ScoringModel, encode
from scoring.spec import CREDREF, ModelSpec
from training.config import DEFAULT_CLASS_BANDS

#: The calendar features whose trained positions the PD interpolates between.
BRACKETED = ("reporting_cycle_day", "open_report_unfiled_days")

#: The score scale puts these percentiles of the validation's long-run PD (riskiest,
#: safest) at 300 and 800 points.
SCALE_PERCENTILES = (1.0, 99.0)


def fit_platt(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:

    lr = LogisticRegression(C=1e6, max_iter=1000).fit(margin.reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def make_scoring_model(
    booster: lgb.Booster,
    kind: str,
    valid_X: pd.DataFrame,
    valid_y: np.ndarray,
    points: PointsTable | None = None,
    class_bands: tuple[float, float, float] = DEFAULT_CLASS_BANDS,
    scale: ScoreScale | None = None,
    spec: ModelSpec = CREDREF,
    catalogue: str | None = None,
) -> ScoringModel:
    """Calibrate on validation (the PD on the day, and the standing to the long-run rate),
    fit the score scale to the validation's spread unless ``scale`` is given, and keep
    the fixed class bands (``catalogue``: the catalogue's version, credref's by default)."""
    reference = {f: CALENDAR_REFERENCE[f] for f in spec.calendar}
    draft = ScoringModel(
        booster, kind, 1.0, 0.0, class_bands, ScoreScale(), points,
        catalogue or catalogue_version(), spec, calendar_reference=reference,
    )  # fmt: skip
    X = encode(valid_X, spec)
    a, b = fit_platt(draft.margin(X), valid_y)
    standing = draft.margin(draft.at_reference(X))
    sa, sb = fit_platt(standing, valid_y)
    if scale is None:
        long_run = 1.0 / (1.0 + np.exp(-(sa * standing + sb)))
        risky, safe = (float(np.percentile(long_run, 100 - q)) for q in SCALE_PERCENTILES)
        # a model that ranks (nearly) no one apart has no spread to span: the default scale
        scale = ScoreScale.spanning(risky, safe) if risky > safe * 1.0001 else ScoreScale()
    return ScoringModel(
        booster, kind, a, b, tuple(class_bands), scale, points,  # type: ignore[arg-type]
        catalogue or catalogue_version(), spec, sa, sb, reference,
        between_positions=set(BRACKETED) <= set(spec.calendar),
    )  # fmt: skip
