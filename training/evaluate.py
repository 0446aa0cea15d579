"""Out-of-time evaluation: discrimination, calibration, classes, slices, oracle ratio."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display
import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score, roc_curve

from training.scoring import CLASSES

AGE_BANDS = (0, 1, 3, 5, 10, 1000)


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-frequency bins."""
    order = np.argsort(p, kind="stable")
    total = 0.0
    for part in np.array_split(order, bins):
        if len(part):
            total += len(part) * abs(p[part].mean() - y[part].mean())
    return float(total / len(p))


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    fpr, tpr, _ = roc_curve(y, p)
    auc = roc_auc_score(y, p)
    return {
        "auc": float(auc),
        "gini": float(2 * auc - 1),
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


def slices(X: pd.DataFrame, y: np.ndarray, p: np.ndarray, classes: np.ndarray) -> pd.DataFrame:
    """AUC, calibration and class mix by city, organisational form and age band."""
    keys = {
        "city": X["city"].astype(str).to_numpy(),
        "org_form": np.where(X["org_form_family"].to_numpy() > 0, "family", "individual"),
        "age_band": age_band(X["reg_age_years"].to_numpy()),
    }
    overall_d = float(np.mean(classes == "D"))
    rows = []
    for dim, values in keys.items():
        for v in sorted(set(values)):
            m = values == v
            yy, pp = y[m], p[m]
            rows.append(
                {
                    "slice": dim,
                    "value": v,
                    "n": int(m.sum()),
                    "auc": float(roc_auc_score(yy, pp)) if 0 < yy.sum() < len(yy) else float("nan"),
                    "mean_pd": float(pp.mean()),
                    "observed_rate": float(yy.mean()),
                    "share_D": float(np.mean(classes[m] == "D")),
                    "d_rate_ratio": float(np.mean(classes[m] == "D") / overall_d)
                    if overall_d
                    else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def reliability_plot(y: np.ndarray, p: np.ndarray, path: Path, bins: int = 10) -> None:
    order = np.argsort(p, kind="stable")
    parts = [part for part in np.array_split(order, bins) if len(part)]
    mp = [p[part].mean() for part in parts]
    my = [y[part].mean() for part in parts]
    fig, ax = plt.subplots(figsize=(5, 5))
    top = max(max(mp), max(my)) * 1.05
    ax.plot([0, top], [0, top], "--", color="grey", label="perfect")
    ax.plot(mp, my, "o-", label="model")
    ax.set_xlabel("predicted PD (decile mean)")
    ax.set_ylabel("observed adverse-event rate")
    ax.set_title("Reliability, out-of-time test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def score_by_city_plot(city: np.ndarray, score: np.ndarray, path: Path) -> None:
    cities = sorted(set(city))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.boxplot([score[city == c] for c in cities], showfliers=False)
    ax.set_xticks(range(1, len(cities) + 1), cities, rotation=30)
    ax.set_ylabel("score (0-1000, higher = lower risk)")
    ax.set_title("Score distribution by city, out-of-time test")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def shap_summary_plot(contrib: np.ndarray, X: pd.DataFrame, path: Path) -> None:
    import shap

    Xn = X.copy()
    for c in Xn.columns:
        if isinstance(Xn[c].dtype, pd.CategoricalDtype):
            Xn[c] = Xn[c].cat.codes
    plt.figure()
    shap.summary_plot(contrib, Xn, show=False, max_display=15)
    plt.tight_layout()
    plt.savefig(path, dpi=100)
    plt.close("all")
