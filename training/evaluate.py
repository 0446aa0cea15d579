"""Out-of-time evaluation: discrimination, calibration, classes, slices.

The one AUC (:func:`auc`) and the one slice table (:func:`slice_table`) behind training's
model card, the promotion gate and monitoring.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score, roc_curve

from scoring.model import CLASSES
from scoring.spec import CREDREF, ModelSpec

AGE_BANDS = (0, 1, 3, 5, 10, 1000)
#: A slice is miscalibrated when its observed/predicted ratio, relative to the whole
#: population's, leaves this band (and an exact binomial test says it is not chance).
MISCAL_LOW, MISCAL_HIGH = 0.8, 1.25


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-frequency bins."""
    order = np.argsort(p, kind="stable")
    total = 0.0
    for part in np.array_split(order, bins):
        if len(part):
            total += len(part) * abs(p[part].mean() - y[part].mean())
    return float(total / len(p))


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve, or None when ``y`` holds one class only (undefined)."""
    y = np.asarray(y)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    fpr, tpr, _ = roc_curve(y, p)
    a = roc_auc_score(y, p)
    return {
        "auc": float(a),
        "gini": float(2 * a - 1),
        "ks": float(np.max(tpr - fpr)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-12, 1 - 1e-12))),
        "ece": ece(y, p),
        "base_rate": float(np.mean(y)),
        "mean_pd": float(np.mean(p)),
    }


def class_table(y: np.ndarray, classes: np.ndarray) -> pd.DataFrame:
    rows = []
    for c in CLASSES:
        m = classes == c
        rows.append(
            {
                "class": c,
                "n": int(m.sum()),
                "share": float(m.mean()),
                "observed_rate": float(y[m].mean()) if m.any() else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def strictly_increasing(rates: pd.Series) -> bool:
    r = rates.to_numpy()
    return bool(np.all(np.isfinite(r)) and np.all(np.diff(r) > 0))


def age_band(years: np.ndarray) -> np.ndarray:
    labels = [f"{lo}-{hi}y" if hi < 1000 else f"{lo}y+" for lo, hi in itertools.pairwise(AGE_BANDS)]
    idx = np.searchsorted(np.asarray(AGE_BANDS[1:]), years, side="right")
    return np.asarray(labels)[np.minimum(idx, len(labels) - 1)]


def slice_frame(
    features: pd.DataFrame, scored: pd.DataFrame, y: np.ndarray, spec: ModelSpec = CREDREF
) -> pd.DataFrame:
    """The slicing dimensions of scored rows (``spec.slices``), with outcome, PD and class."""
    outcome = {"y": y, "pd": scored["pd"].to_numpy(), "risk_class": scored["risk_class"].to_numpy()}
    if spec.name != "credref":
        return pd.DataFrame(
            {**{d: features[d].astype(str).to_numpy() for d in spec.slices}, **outcome}
        )
    return pd.DataFrame(
        {
            "city": features["city"].astype(str).to_numpy(),
            "org_form": np.where(
                features["org_form_family"].to_numpy() > 0, "family", "individual"
            ),
            "industry": features["industry"].astype(str).to_numpy(),
            "age_band": age_band(features["reg_age_years"].to_numpy(dtype=float)),
            "y": y,
            "pd": scored["pd"].to_numpy(),
            "risk_class": scored["risk_class"].to_numpy(),
        }
    )


def slice_table(frame: pd.DataFrame) -> list[dict]:
    """``frame``: the slicing dimensions, then y, pd, risk_class (one matured date)."""
    overall_d = float((frame.risk_class == "D").mean())
    # Calibration is judged against the whole population's: a slice is miscalibrated when
    # its outcomes leave the predictions behind more than everyone's do (a drift common to
    # all is the back-test's finding, not the slice's).
    overall_ratio = float(frame.y.mean() / frame.pd.mean()) if frame.pd.mean() > 0 else 1.0
    rows = []
    for dim in [c for c in frame.columns if c not in ("y", "pd", "risk_class")]:
        for value, g in frame.groupby(dim, observed=True, sort=True):
            y, p = g.y.to_numpy(), g.pd.to_numpy()
            shares = {c: float((g.risk_class == c).mean()) for c in CLASSES}
            ratio = float(y.mean() / p.mean()) if p.mean() > 0 else None
            relative = ratio / overall_ratio if ratio is not None and overall_ratio > 0 else None
            expected = min(max(p.mean() * overall_ratio, 1e-12), 1 - 1e-12)
            p_cal = float(binomtest(int(y.sum()), len(y), expected).pvalue)
            rows.append(
                {
                    "dimension": dim,
                    "slice": str(value),
                    "n": len(g),
                    "auc": auc(y, p),
                    "mean_pd": float(p.mean()),
                    "observed_rate": float(y.mean()),
                    "calibration_ratio": ratio,
                    "relative_calibration": relative,
                    "calibration_p_value": p_cal,
                    # off the population's calibration by more than a quarter, not by chance
                    "miscalibrated": relative is not None
                    and (relative > MISCAL_HIGH or relative < MISCAL_LOW)
                    and p_cal < 0.01,
                    **{f"share_{c}": v for c, v in shares.items()},
                    "d_rate_ratio": shares["D"] / overall_d if overall_d > 0 else None,
                }
            )
    return rows
