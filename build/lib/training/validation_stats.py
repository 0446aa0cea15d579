"""The statistics of a PD model's validation report, as model validators compute them.

Following the ECB's instructions for reporting the validation results of internal
models (IRB, 2019; sections on discriminatory power, predictive ability and
concentration) and SR 11-7's outcomes analysis:

* discriminatory power: AUC with its DeLong standard error and confidence interval, and
  the test of its change against the development sample, S = (AUC_dev - AUC_now) /
  s_now, one-sided p-value 1 - Phi(S) (a small value: power has fallen);
* predictive ability per class: the Jeffreys test, the posterior Beta(D + 1/2, N - D +
  1/2) of the default rate given D defaults in N, p-value its CDF at the class's PD (a
  small value: the PD is too low for what was observed);
* concentration: the Herfindahl index of the class distribution, ECB's normalised form
  HI = 1 + ln((CV^2 + 1) / K) / ln K with CV = sqrt(K * sum (R_i - 1/K)^2) (0: even, 1: all
  in one class);
* migration stability: the shares of households staying, moving one class and moving more.

Pure functions of arrays, each checked against a hand computation in the tests.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta, norm


def _midranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def auc_delong(y: np.ndarray, p: np.ndarray, alpha: float = 0.05) -> dict:
    """AUC (risk scores: higher ``p`` = more likely bad) with DeLong's standard error
    (Sun and Xu's midrank algorithm) and a two-sided ``1 - alpha`` interval."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, float)
    pos, neg = p[y], p[~y]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("the AUC needs both outcomes")
    all_ranks = _midranks(np.concatenate([pos, neg]))
    tx, ty = _midranks(pos), _midranks(neg)
    auc = (all_ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (all_ranks[:m] - tx) / n  # per bad: share of goods ranked below
    v01 = 1 - (all_ranks[m:] - ty) / m  # per good: share of bads ranked above
    var = np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n
    se = math.sqrt(max(var, 0.0))
    z = norm.ppf(1 - alpha / 2)
    return {
        "auc": float(auc),
        "se": se,
        "ci": [float(auc - z * se), float(auc + z * se)],
        "n": int(m + n),
        "bads": int(m),
    }


def auc_change(development: dict, now: dict) -> dict:
    """ECB's test of the AUC's change: S = (AUC_dev - AUC_now) / s_now, p = 1 - Phi(S)."""
    s = (development["auc"] - now["auc"]) / now["se"] if now["se"] > 0 else math.inf
    return {"statistic": float(s), "p_value": float(1 - norm.cdf(s))}


def jeffreys(defaults: int, n: int, pd_: float) -> float:
    """One-sided p-value of the Jeffreys test: Beta(D + 1/2, N - D + 1/2) CDF at the PD."""
    return float(beta.cdf(pd_, defaults + 0.5, n - defaults + 0.5))


def herfindahl(counts: list[int] | np.ndarray) -> dict:
    """ECB's normalised Herfindahl index of a class distribution (and the plain sum)."""
    c = np.asarray(counts, float)
    k = len(c)
    r = c / c.sum()
    cv = math.sqrt(k * float(((r - 1 / k) ** 2).sum()))
    return {
        "hhi": float((r**2).sum()),
        "normalised": float(1 + math.log((cv**2 + 1) / k) / math.log(k)),
        "cv": cv,
    }


def migration_stability(matrix: np.ndarray) -> dict:
    """Shares staying in their class, moving one class and moving two or more, from a
    square migration count matrix (rows: from, columns: to, classes in order)."""
    m = np.asarray(matrix, float)
    total = m.sum()
    i, j = np.indices(m.shape)
    step = np.abs(i - j)
    return {
        "stayed": float(m[step == 0].sum() / total),
        "moved_one": float(m[step == 1].sum() / total),
        "moved_more": float(m[step >= 2].sum() / total),
        "households": int(total),
    }
