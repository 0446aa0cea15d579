"""Plots of the training run (files only): the plotting backend is chosen here, where
plots are made, never at import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display is ever needed)."""
    import matplotlib  # here: the backend is chosen before pyplot is first imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reliability_plot(y: np.ndarray, p: np.ndarray, path: Path, bins: int = 10) -> None:
    order = np.argsort(p, kind="stable")
    parts = [part for part in np.array_split(order, bins) if len(part)]
    mp = [p[part].mean() for part in parts]
    my = [y[part].mean() for part in parts]
    plt = pyplot()
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
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.boxplot([score[city == c] for c in cities], showfliers=False)
    ax.set_xticks(range(1, len(cities) + 1), cities, rotation=30)
    ax.set_ylabel("score (0-1000, higher = lower risk)")
    ax.set_title("Score distribution by city, out-of-time test")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def shap_summary_plot(contrib: np.ndarray, X: pd.DataFrame, path: Path) -> None:
    import shap  # seconds to load: only the training report's summary plot needs it

    Xn = X.copy()
    for c in Xn.columns:
        if isinstance(Xn[c].dtype, pd.CategoricalDtype):
            Xn[c] = Xn[c].cat.codes
    plt = pyplot()
    plt.figure()
    # the beeswarm's jitter from a generator of its own: two identical runs draw identical
    # plots, and numpy's global state is neither read nor changed
    shap.summary_plot(contrib, Xn, show=False, max_display=15, rng=np.random.default_rng(0))
    plt.tight_layout()
    plt.savefig(path, dpi=100)
    plt.close("all")
