"""Checks that fail a training run: monotonicity, SHAP additivity, the points table."""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from scoring.model import PointsTable, encode
from scoring.spec import CREDREF, ModelSpec

SHAP_TOL = 1e-6
POINTS_TOL = 1e-9


@dataclass
class CheckReport:
    monotonicity_violations: dict[str, int]
    shap_additivity_max_error: float
    points_max_error: float | None

    @property
    def passed(self) -> bool:
        ok = (
            sum(self.monotonicity_violations.values()) == 0
            and self.shap_additivity_max_error <= SHAP_TOL
        )
        return ok and (self.points_max_error is None or self.points_max_error <= POINTS_TOL)

    def failures(self) -> list[str]:
        out = [
            f"{f}: {n} rows break the monotone constraint"
            for f, n in self.monotonicity_violations.items()
            if n
        ]
        if self.shap_additivity_max_error > SHAP_TOL:
            out.append(f"SHAP additivity error {self.shap_additivity_max_error:.2e} > {SHAP_TOL}")
        if self.points_max_error is not None and self.points_max_error > POINTS_TOL:
            out.append(f"points table error {self.points_max_error:.2e} > {POINTS_TOL}")
        return out


def monotonicity_violations(
    booster: lgb.Booster,
    X: pd.DataFrame,
    n_rows: int = 300,
    n_grid: int = 30,
    seed: int = 0,
    spec: ModelSpec = CREDREF,
) -> dict[str, int]:
    """Sweep each constrained feature over a grid on sampled rows (rows with missing values
    in other features included) and count rows whose raw margin moves the wrong way."""
    rng = np.random.default_rng(seed)
    rows = X.iloc[rng.choice(len(X), size=min(n_rows, len(X)), replace=False)].reset_index(
        drop=True
    )
    out = {}
    for name, sign in zip(spec.features, spec.monotone, strict=True):
        if sign == 0:
            continue
        col = X[name].to_numpy(dtype=float)
        col = col[~np.isnan(col)]
        grid = np.unique(np.quantile(col, np.linspace(0, 1, n_grid)))
        grid = np.unique(np.concatenate([[grid.min() - 1, 0.0], grid, [grid.max() * 2 + 1]]))
        frame = rows.loc[rows.index.repeat(len(grid))].reset_index(drop=True)
        frame[name] = np.tile(grid, len(rows))
        m = booster.predict(frame, raw_score=True).reshape(len(rows), len(grid))
        steps = np.diff(m, axis=1) * sign
        out[name] = int((steps < -1e-12).any(axis=1).sum())
    return out


def shap_additivity_error(booster: lgb.Booster, X: pd.DataFrame) -> float:
    """max |bias + sum of TreeSHAP contributions - raw margin|."""
    contrib = booster.predict(X, pred_contrib=True)
    return float(np.abs(contrib.sum(axis=1) - booster.predict(X, raw_score=True)).max())


def points_error(points: PointsTable, booster: lgb.Booster, X: pd.DataFrame) -> float:
    margin = points.margin(encode(X, points.spec))
    return float(np.abs(margin - booster.predict(X, raw_score=True)).max())


def run_checks(
    booster: lgb.Booster,
    X: pd.DataFrame,
    points: PointsTable | None,
    seed: int = 0,
    spec: ModelSpec = CREDREF,
) -> CheckReport:
    sample = X.sample(n=min(len(X), 5000), random_state=seed)
    return CheckReport(
        monotonicity_violations=monotonicity_violations(booster, X, seed=seed, spec=spec),
        shap_additivity_max_error=shap_additivity_error(booster, sample),
        points_max_error=points_error(points, booster, sample) if points is not None else None,
    )
