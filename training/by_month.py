"""Quality on every day: a model judged month by month over its test year, not on one date.

The test split holds every month end of a year (``training.data.split_out_of_time``), so
each calendar position (a filing period opening, its last weeks, the July markings, the
quiet autumn) is judged on its own: discrimination (AUC, and its ratio to the oracle's
on the same rows when the generator's truth is there), calibration of the PD on the day
(ECE), the class shares, and the class moves the calendar alone makes: among households
present at two consecutive month ends whose standing reads the same records
(:func:`standing_view`: no record learnt, no deadline passed, no window or band entered
for them), the share whose class changed.
The promotion gate refuses a model whose worst month falls below the targets here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoring.model import CLASSES
from scoring.spec import ModelSpec, band_floor
from training.evaluate import auc, ece

#: Targets every month of the test year must meet (issue: answers true on every day).
ECE_MAX = 0.02
ORACLE_RATIO_MIN = 0.97
#: At most this share of households with no event of their own change class over a month.
CALENDAR_MOVES_MAX = 0.05
#: Class moves are measured between consecutive as-of dates at most this far apart.
MONTH_DAYS = 31


def standing_view(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """What a household's standing (score, class, reasons) reads of its records: every
    feature but the calendar ones, those that grow with every day as their band
    (``ModelSpec.bands``). Two days on which it is equal are days on which nothing of the
    household's own moved: no record learnt, no deadline passed, no window or band entered."""
    cols = [f for f in spec.features if f not in spec.calendar]
    out = frame[cols].copy()
    for name, edges in spec.bands.items():
        out[name] = band_floor(pd.to_numeric(out[name]).to_numpy(dtype=float), edges)
    return out


def by_month(
    raw: pd.DataFrame, y: np.ndarray, scored: pd.DataFrame, spec: ModelSpec
) -> pd.DataFrame:
    """One row per as-of date of ``raw`` (test rows: uscc, as_of, oracle_pd optional, the
    features), with ``scored``'s PD and class for the same rows in the same order."""
    frame = raw.assign(y=y, pd=scored["pd"].to_numpy(), risk_class=scored["risk_class"].to_numpy())
    rows, previous = [], None
    for as_of, g in frame.groupby("as_of", sort=True):
        yy, p = g.y.to_numpy(), g.pd.to_numpy()
        model_auc = auc(yy, p)
        oracle_auc = _oracle_auc(g)
        row = {
            "as_of": str(as_of),
            "n": len(g),
            "base_rate": float(yy.mean()),
            "mean_pd": float(p.mean()),
            "auc": model_auc,
            "oracle_auc": oracle_auc,
            "oracle_ratio": model_auc / oracle_auc if model_auc and oracle_auc else None,
            "ece": ece(yy, p),
            **{f"share_{c}": float((g.risk_class == c).mean()) for c in CLASSES},
            **calendar_moves(_month_before(previous, as_of), g, spec),
        }
        rows.append(row)
        previous = g
    return pd.DataFrame(rows)


def _month_before(previous: pd.DataFrame | None, as_of) -> pd.DataFrame | None:
    """The previous as-of date's rows if it is at most a month before ``as_of``."""
    if previous is None:
        return None
    gap = pd.Timestamp(as_of) - pd.Timestamp(previous.as_of.iloc[0])
    return previous if gap.days <= MONTH_DAYS else None


def _oracle_auc(g: pd.DataFrame) -> float | None:
    if "oracle_pd" not in g:
        return None
    known = g.oracle_pd.notna().to_numpy()
    return auc(g.y.to_numpy()[known], g.oracle_pd.to_numpy()[known]) if known.any() else None


def calendar_moves(before: pd.DataFrame | None, after: pd.DataFrame, spec: ModelSpec) -> dict:
    """Among households in both whose record features are equal, how many there are and
    the share whose class changed (``None`` for the first month)."""
    if before is None or "uscc" not in after:  # no earlier month, or rows without a key
        return {"without_event": None, "class_moves_without_event": None}
    cols = [f for f in spec.features if f not in spec.calendar]
    views = [
        pd.concat([g[["uscc", "risk_class"]], standing_view(g, spec)], axis=1)
        for g in (before, after)
    ]
    both = views[0].merge(views[1], on="uscc", suffixes=("_0", "_1"))
    same = np.ones(len(both), dtype=bool)
    for c in cols:
        a, b = both[f"{c}_0"], both[f"{c}_1"]
        same &= ((a == b) | (a.isna() & b.isna())).to_numpy()
    quiet = both[same]
    moved = (quiet.risk_class_0 != quiet.risk_class_1).to_numpy()
    return {
        "without_event": len(quiet),
        "class_moves_without_event": float(moved.mean()) if len(quiet) else 0.0,
    }


def worst(table: pd.DataFrame) -> dict:
    """The worst month of each figure the gate reads."""
    ratios = table.oracle_ratio.dropna()
    moves = table.class_moves_without_event.dropna()
    return {
        "worst_month_auc": float(table.auc.min()),
        "worst_month_ece": float(table.ece.max()),
        "worst_month_oracle_ratio": float(ratios.min()) if len(ratios) else None,
        "worst_month_class_moves_without_event": float(moves.max()) if len(moves) else None,
    }


def failures(w: dict) -> list[str]:
    """What the worst months say against the targets (empty: every month meets them)."""
    out = []
    if w["worst_month_ece"] > ECE_MAX:
        out.append(f"worst-month ECE {w['worst_month_ece']:.4f} exceeds {ECE_MAX}")
    ratio = w.get("worst_month_oracle_ratio")
    if ratio is not None and ratio < ORACLE_RATIO_MIN:
        out.append(f"worst-month oracle ratio {ratio:.4f} is below {ORACLE_RATIO_MIN}")
    moves = w.get("worst_month_class_moves_without_event")
    if moves is None:
        out.append("class stability not measured: the test needs consecutive month ends")
    elif moves > CALENDAR_MOVES_MAX:
        out.append(
            f"{moves:.2%} of households with no event of their own changed class in a month, "
            f"above {CALENDAR_MOVES_MAX:.0%}"
        )
    return out
