"""Monitoring figures (pure): drift, migration, back-test and fairness slices.

``credref monitor --as-of T`` compares the population scored on T with the champion's
training reference (a sample of its training rows, logged with the model):

* **PSI** of the score and **CSI** of every catalogue feature, ten bins cut at the
  reference's deciles (categories for categorical features, missing as its own bin):
  ``sum((cur - ref) * ln(cur / ref))`` over bins, shares floored at 1e-4. Verdicts:
  below 0.10 stable, 0.10-0.25 moderate shift, above 0.25 significant shift.
* **Class migration** between an earlier as-of date and T (households operating on both;
  those gone by T in an ``exited`` column).
* **Back-test** of matured snapshots (12-month outcome fully observed): per class, the
  mean predicted PD against the observed adverse-event rate, with an exact two-sided
  binomial test (scipy) of the count under the predicted PD.
* **Slices** of the latest matured snapshot by city, organisational form, industry section
  and registration-age band: rows, AUC, mean PD, observed rate, calibration ratio
  (observed / predicted) and its ratio to the whole population's (*miscalibrated* when
  that is outside 0.8-1.25 and an exact binomial test gives p < 0.01), class shares and
  the ratio of the slice's class-D share to the overall class-D share.
* **Score PSI by city**: a shift confined to one city is diluted nationally. A city is
  flagged when its score PSI reaches 0.10 or its slice is miscalibrated.

Rendering is :mod:`governance.monitor_render`; gathering the inputs and logging the run is
:mod:`governance.monitor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from features.catalogue import CATEGORIES, FEATURE_NAMES, FEATURES_BY_NAME
from scoring.model import CLASSES, ScoringModel
from training.evaluate import slice_frame, slice_table

STABLE, MODERATE = 0.10, 0.25
EPS = 1e-4


def verdict(value: float) -> str:
    if value < STABLE:
        return "stable"
    return "moderate shift" if value < MODERATE else "significant shift"


# --- population stability -------------------------------------------------------------


def _bins_numeric(ref: np.ndarray, bins: int) -> np.ndarray:
    finite = ref[~np.isnan(ref)]
    if finite.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))


def _assign(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per value: 0..len(edges) by edges (right-closed), len(edges)+1 if missing."""
    idx = np.searchsorted(edges, values, side="left")
    return np.where(np.isnan(values), len(edges) + 1, idx)


def stability(
    ref: pd.Series | np.ndarray, cur: pd.Series | np.ndarray, categories=None, bins: int = 10
) -> dict:
    """PSI of ``cur`` against ``ref``, with its bins (labels, reference and current shares)."""
    if categories is not None:
        labels = [*categories, "(missing)"]
        codes = {c: i for i, c in enumerate(categories)}

        def to_idx(s):
            return np.asarray([codes.get(v, len(categories)) for v in pd.Series(s).astype(object)])

        r_idx, c_idx = to_idx(ref), to_idx(cur)
    else:
        r = np.asarray(ref, dtype=float)
        c = np.asarray(cur, dtype=float)
        edges = _bins_numeric(r, bins)
        labels = [
            *(
                f"<= {edges[0]:g}"
                if k == 0
                else f"> {edges[k - 1]:g}"
                if k == len(edges)
                else f"({edges[k - 1]:g}, {edges[k]:g}]"
                for k in range(len(edges) + 1)
            ),
            "(missing)",
        ]
        r_idx, c_idx = _assign(r, edges), _assign(c, edges)
    k = len(labels)
    r_share = np.bincount(r_idx, minlength=k) / max(len(r_idx), 1)
    c_share = np.bincount(c_idx, minlength=k) / max(len(c_idx), 1)
    rs, cs = np.maximum(r_share, EPS), np.maximum(c_share, EPS)
    value = float(np.sum((cs - rs) * np.log(cs / rs)))
    return {
        "psi": value,
        "verdict": verdict(value),
        "bins": [
            {"bin": lab, "reference": float(a), "current": float(b)}
            for lab, a, b in zip(labels, r_share, c_share, strict=True)
        ],
    }


# --- migration, back-test, slices -----------------------------------------------------------


def migration(prev: pd.Series, cur: pd.Series) -> pd.DataFrame:
    """Counts from the class on the earlier date (rows) to the class on T (columns).

    ``prev`` and ``cur`` are classes indexed by household code.
    """
    both = pd.DataFrame({"from": prev}).join(pd.DataFrame({"to": cur}), how="left")
    both["to"] = both["to"].fillna("exited")
    table = pd.crosstab(both["from"], both["to"])
    return table.reindex(index=list(CLASSES), columns=[*CLASSES, "exited"], fill_value=0)


def backtest(classes: np.ndarray, pd_: np.ndarray, y: np.ndarray) -> list[dict]:
    rows = []
    for c in CLASSES:
        m = classes == c
        n = int(m.sum())
        if n == 0:
            rows.append({"class": c, "n": 0})
            continue
        k = int(y[m].sum())
        pred = float(pd_[m].mean())
        p = float(binomtest(k, n, min(max(pred, 1e-12), 1 - 1e-12)).pvalue)
        rows.append(
            {
                "class": c,
                "n": n,
                "events": k,
                "predicted_rate": pred,
                "observed_rate": k / n,
                "p_value": p,
                "consistent": p >= 0.05,
            }
        )
    return rows


# --- the whole report -----------------------------------------------------------------------


@dataclass
class MonitorInputs:
    """Everything the report is computed from (features as the catalogue defines them)."""

    as_of: date
    reference: pd.DataFrame  # the champion's training rows (features)
    current: pd.DataFrame  # features on as_of (uscc + features)
    previous_as_of: date
    previous: pd.DataFrame  # features on previous_as_of
    matured: dict[date, tuple[pd.DataFrame, np.ndarray]]  # as-of -> (features, labels)


def season_matched(reference: pd.DataFrame, as_of: date, minimum: int = 1000) -> pd.DataFrame:
    """The reference rows from the same calendar month as ``as_of``, if there are enough.

    Several features follow the reporting calendar (a report due on 30 June, markings in
    July), so a June population compared with a reference of all quarters shows a
    seasonal "shift" that is no drift at all.
    """
    if "as_of" not in reference:
        return reference
    month = pd.to_datetime(reference["as_of"]).dt.month
    same = reference[month.to_numpy() == as_of.month]
    return same if len(same) >= minimum else reference


def build_report(model: ScoringModel, inputs: MonitorInputs, model_version: str) -> dict:
    """Every figure of the monitoring report (pure: inputs in, a JSON-ready dict out)."""
    reference = season_matched(inputs.reference, inputs.as_of)
    ref_dates = (
        sorted({str(d) for d in reference["as_of"]}) if "as_of" in reference else ["(undated)"]
    )
    inputs = MonitorInputs(
        inputs.as_of,
        reference,
        inputs.current,
        inputs.previous_as_of,
        inputs.previous,
        inputs.matured,
    )
    ref_scored = model.score_frame(inputs.reference, with_reasons=False)
    cur_scored = model.score_frame(inputs.current, with_reasons=False)
    report: dict = {
        "as_of": inputs.as_of.isoformat(),
        "model_version": model_version,
        "catalogue_version": model.catalogue_version,
        "rows": {"reference": len(inputs.reference), "current": len(inputs.current)},
        "reference_as_of": ref_dates,
        "thresholds": {"stable_below": STABLE, "significant_above": MODERATE},
        "class_shares": {
            "reference": {c: float((ref_scored.risk_class == c).mean()) for c in CLASSES},
            "current": {c: float((cur_scored.risk_class == c).mean()) for c in CLASSES},
        },
        **_stability_section(inputs, ref_scored, cur_scored),
    }
    report["migration"] = _migration_section(model, inputs, cur_scored)
    report.update(_backtest_and_slices(model, inputs))
    report["summary"] = _summary(report)
    report["summary"] |= _verdict(report["summary"])
    return report


def _stability_section(inputs: MonitorInputs, ref_scored, cur_scored) -> dict:
    """Score PSI, every feature's CSI, and the score's PSI within each city (a shift
    confined to one city is diluted in the national PSI but plain there)."""
    csi = {}
    for name in FEATURE_NAMES:
        cats = CATEGORIES.get(name) if FEATURES_BY_NAME[name].value_type == "category" else None
        csi[name] = stability(inputs.reference[name], inputs.current[name], cats)
        if FEATURES_BY_NAME[name].calendar:
            # where the day stands in the reporting calendar: the reference spans every
            # position, one day has one; its "shift" is the date, not the population
            csi[name]["verdict"] = "calendar position"
    segs = {}
    for city in CATEGORIES["city"]:
        r = ref_scored["score"][inputs.reference["city"].astype(str).to_numpy() == city]
        c = cur_scored["score"][inputs.current["city"].astype(str).to_numpy() == city]
        if len(r) and len(c):
            seg = stability(r, c)
            segs[city] = {"psi": seg["psi"], "verdict": seg["verdict"], "rows": len(c)}
    return {
        "score_psi": stability(ref_scored["score"], cur_scored["score"]),
        "feature_csi": csi,
        "segment_psi": {"dimension": "city", "segments": segs},
        "flagged_features": sorted(
            n for n, v in csi.items() if v["psi"] >= STABLE and not FEATURES_BY_NAME[n].calendar
        ),
    }


def _migration_section(model: ScoringModel, inputs: MonitorInputs, cur_scored) -> dict:
    prev_scored = model.score_frame(inputs.previous, with_reasons=False)
    mig = migration(
        pd.Series(prev_scored.risk_class.to_numpy(), index=inputs.previous.uscc.to_numpy()),
        pd.Series(cur_scored.risk_class.to_numpy(), index=inputs.current.uscc.to_numpy()),
    )
    return {
        "from": inputs.previous_as_of.isoformat(),
        "to": inputs.as_of.isoformat(),
        "counts": {r: {c: int(mig.loc[r, c]) for c in mig.columns} for r in mig.index},
    }


def _backtest_and_slices(model: ScoringModel, inputs: MonitorInputs) -> dict:
    """The back-test of every matured date, and the slices of the latest one."""
    out: dict = {"backtest": {}}
    latest = None
    for day in sorted(inputs.matured):
        feats, y = inputs.matured[day]
        scored = model.score_frame(feats, with_reasons=False)
        out["backtest"][day.isoformat()] = backtest(
            scored.risk_class.to_numpy(), scored.pd.to_numpy(), y
        )
        latest = (day, feats, scored, y)
    if latest is not None:
        day, feats, scored, y = latest
        out["slices"] = {
            "as_of": day.isoformat(),
            "rows": slice_table(slice_frame(feats, scored, y)),
        }
    return out


def _verdict(s: dict) -> dict:
    """The monitoring run's word, from every test it ran (never "stable" beside a failed
    one): the findings, and "stable" only when there are none."""
    found = []
    if s["score_verdict"] != "stable":
        found.append(f"score PSI {s['score_psi']:.4f} ({s['score_verdict']})")
    if s["features_flagged"]:
        found.append(f"{s['features_flagged']} feature(s) moved (CSI at or above {STABLE})")
    if s["segments_flagged"]:
        found.append(f"cities shifted: {', '.join(s['segments_flagged'])}")
    if s["slices_miscalibrated"]:
        found.append(f"slices miscalibrated: {', '.join(s['slices_miscalibrated'])}")
    if s["backtest_inconsistent_classes"]:
        found.append(f"{s['backtest_inconsistent_classes']} back-test class(es) inconsistent at 5%")
    return {"findings": found, "verdict": "findings" if found else "stable"}


def _summary(report: dict) -> dict:
    csi, segs = report["feature_csi"], report["segment_psi"]["segments"]
    miscalibrated = [
        f"{r['dimension']}={r['slice']}"
        for r in report.get("slices", {}).get("rows", [])
        if r["miscalibrated"]
    ]
    return {
        "score_psi": report["score_psi"]["psi"],
        "score_verdict": report["score_psi"]["verdict"],
        "max_csi": max(v["psi"] for v in csi.values()),
        "features_flagged": len(report["flagged_features"]),
        "slices_miscalibrated": miscalibrated,
        # a city is flagged when its score distribution moved or its outcomes left the
        # model's predictions behind
        "segments_flagged": sorted(
            {k for k, v in segs.items() if v["psi"] >= STABLE}
            | {m.split("=", 1)[1] for m in miscalibrated if m.startswith("city=")}
        ),
        "backtest_inconsistent_classes": sum(
            1 for rows in report["backtest"].values() for r in rows if r.get("consistent") is False
        ),
    }
