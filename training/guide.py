"""The score guide of a model version: what its score, class and PD mean, for platforms.

Published with every model version (in its artefact, its model card, at ``GET
/v1/score_guide`` and in the OpenAPI document), as bureaus publish what each band means
and its observed bad rate: the outcome and horizon, the rating philosophy, each class's
fixed long-run PD band with the score range it covers and the bad rate observed over the
out-of-time test year (with a 95% Wilson interval), the score-to-odds table, and what the
policy override means.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from scoring.model import CLASSES, ScoringModel
from scoring.spec import ModelSpec

PHILOSOPHY = (
    "The score and the class are the household's standing on its records: the model read "
    "as on a day between filing periods, with its age and the time since its records in "
    "published bands, calibrated to the long-run (all-calendar) outcome rate. They change "
    "when a record of the household changes, a deadline passes for it, a record leaves its "
    "window or its age enters a new band, never with the season. The PD is point-in-time: the "
    "probability of the outcome in the 12 months from the day, which does follow the "
    "reporting calendar (a report not yet filed in June is lawful, never a reason, and "
    "moves neither the score nor the class, but its July marking is near)."
)
OVERRIDE = (
    "A household on the serious illegal and dishonest list is class D with R08 first, "
    "whatever its score (SAMR Order 44)."
)
#: The rows of the score-to-odds table.
SCORE_STEPS = tuple(range(300, 851, 50))


def _long_run_pd(model: ScoringModel, score: float) -> float:
    return 1.0 / (1.0 + model.scale.odds(score))


def _score_of(model: ScoringModel, pd_: float) -> int:
    return int(model.scale.score(np.asarray([pd_]))[0])


def class_bands(model: ScoringModel) -> list[dict]:
    """Each class's long-run PD band and the scores it covers (higher score, lower PD)."""
    cuts = [0.0, *model.class_thresholds, 1.0]
    out = []
    for c, lo, hi in zip(CLASSES, cuts[:-1], cuts[1:], strict=True):
        out.append(
            {
                "class": c,
                "long_run_pd_from": lo,
                "long_run_pd_to": hi,
                "score_from": _score_of(model, hi) if hi < 1.0 else 0,
                "score_to": _score_of(model, lo) if lo > 0.0 else 1000,
            }
        )
    return out


def observed(scored: pd.DataFrame, y: np.ndarray) -> dict[str, dict]:
    """Per class: households, share and observed outcome rate with its 95% interval."""
    out = {}
    for c in CLASSES:
        m = (scored["risk_class"] == c).to_numpy()
        n, bad = int(m.sum()), int(y[m].sum())
        ci = binomtest(bad, n).proportion_ci(method="wilson") if n else None
        lo, hi = (ci.low, ci.high) if ci else (math.nan, math.nan)
        out[c] = {
            "households": n,
            "share": n / len(y) if len(y) else math.nan,
            "observed_rate": bad / n if n else None,
            "interval_95": [float(lo), float(hi)] if n else None,
        }
    return out


def _texts(spec: ModelSpec) -> dict:
    """What the guide says of the outcome, the philosophy and the override: credref's
    texts, or plain ones built from another catalogue's spec."""
    if spec.name == "credref":
        return {
            "outcome": spec.outcome,
            "horizon_months": 12,
            "rating_philosophy": PHILOSOPHY,
            "override": OVERRIDE,
        }
    override = (
        f"A row with {spec.override_feature} is class D with {spec.override_reason} first, "
        "whatever its score."
        if spec.override_feature
        else "No override: the class is the score's band."
    )
    return {
        "outcome": spec.outcome or f"The label of the {spec.name} training set.",
        "horizon_months": None,
        "rating_philosophy": "The score and class read the calibrated PD in fixed bands.",
        "override": override,
    }


def score_guide(model: ScoringModel, scored: pd.DataFrame, y: np.ndarray, test: str) -> dict:
    """The guide of ``model`` from its test rows (``scored``: class per row; ``y``)."""
    seen = observed(scored, y)
    return {
        **_texts(model.spec),
        "observed_over": test,
        "classes": [{**band, **seen[band["class"]]} for band in class_bands(model)],
        "score_to_odds": [
            {
                "score": s,
                "odds_good_to_bad": round(model.scale.odds(s), 2),
                "long_run_pd": round(_long_run_pd(model, s), 5),
            }
            for s in SCORE_STEPS
        ],
        "scale": {
            "points_to_double_the_odds": round(model.scale.pdo, 2),
            "score_range": [0, 1000],
        },
    }


def guide_markdown(guide: dict, unit: str = "households") -> str:
    """The guide as the model card prints it (``unit``: what a row of the test is)."""
    lines = [
        f"| class | long-run PD | score | {unit} | observed rate (95% interval) |",
        "|---|---|---|---:|---|",
    ]
    for c in guide["classes"]:
        rate = c["observed_rate"]
        ci = c["interval_95"]
        seen = f"{rate:.2%} ({ci[0]:.2%}-{ci[1]:.2%})" if rate is not None else "none"
        lines.append(
            f"| {c['class']} | {c['long_run_pd_from']:.1%}-{c['long_run_pd_to']:.1%} "
            f"| {c['score_from']}-{c['score_to']} | {c['households']:,} | {seen} |"
        )
    lines += ["", "| score | odds (good:bad) | long-run PD |", "|---:|---:|---:|"]
    lines += [
        f"| {r['score']} | {r['odds_good_to_bad']:g} | {r['long_run_pd']:.2%} |"
        for r in guide["score_to_odds"]
    ]
    return "\n".join(lines)
