"""Monitoring the champion: drift, migration, back-test and fairness slices.

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

The same figures go to ``report.json`` and to ``report.html`` (plots embedded as PNG, no
server needed); the run is logged to MLflow in the champion's experiment.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from features.catalogue import CATEGORIES, FEATURE_NAMES, FEATURES_BY_NAME
from training.evaluate import age_band
from training.scoring import CLASSES, ScoringModel

STABLE, MODERATE = 0.10, 0.25
MISCAL_LOW, MISCAL_HIGH = 0.8, 1.25
EPS = 1e-4
REFERENCE_ARTIFACT = "monitoring/reference.parquet"
SLICE_DIMENSIONS = ("city", "org_form", "industry", "age_band")


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


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None


def slice_table(frame: pd.DataFrame) -> list[dict]:
    """``frame``: city, org_form, industry, age_band, y, pd, risk_class (one matured date)."""
    overall_d = float((frame.risk_class == "D").mean())
    # Calibration is judged against the whole population's: a slice is miscalibrated when
    # its outcomes leave the predictions behind more than everyone's do (a drift common to
    # all is the back-test's finding, not the slice's).
    overall_ratio = float(frame.y.mean() / frame.pd.mean()) if frame.pd.mean() > 0 else 1.0
    rows = []
    for dim in SLICE_DIMENSIONS:
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
                    "auc": _auc(y, p),
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


def slice_frame(features: pd.DataFrame, scored: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
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
    prev_scored = model.score_frame(inputs.previous, with_reasons=False)
    report: dict = {
        "as_of": inputs.as_of.isoformat(),
        "model_version": model_version,
        "catalogue_version": model.catalogue_version,
        "rows": {"reference": len(inputs.reference), "current": len(inputs.current)},
        "reference_as_of": ref_dates,
        "thresholds": {"stable_below": STABLE, "significant_above": MODERATE},
        "score_psi": stability(ref_scored["score"], cur_scored["score"]),
        "class_shares": {
            "reference": {c: float((ref_scored.risk_class == c).mean()) for c in CLASSES},
            "current": {c: float((cur_scored.risk_class == c).mean()) for c in CLASSES},
        },
    }
    csi = {}
    for name in FEATURE_NAMES:
        cats = CATEGORIES.get(name) if FEATURES_BY_NAME[name].value_type == "category" else None
        csi[name] = stability(inputs.reference[name], inputs.current[name], cats)
    report["feature_csi"] = csi
    # The score's stability within each city: a shift confined to one city is diluted in
    # the national PSI but plain here.
    segs = {}
    for city in CATEGORIES["city"]:
        r = ref_scored["score"][inputs.reference["city"].astype(str).to_numpy() == city]
        c = cur_scored["score"][inputs.current["city"].astype(str).to_numpy() == city]
        if len(r) and len(c):
            seg = stability(r, c)
            segs[city] = {"psi": seg["psi"], "verdict": seg["verdict"], "rows": len(c)}
    report["segment_psi"] = {"dimension": "city", "segments": segs}
    report["flagged_features"] = sorted(n for n, v in csi.items() if v["psi"] >= STABLE)
    mig = migration(
        pd.Series(prev_scored.risk_class.to_numpy(), index=inputs.previous.uscc.to_numpy()),
        pd.Series(cur_scored.risk_class.to_numpy(), index=inputs.current.uscc.to_numpy()),
    )
    report["migration"] = {
        "from": inputs.previous_as_of.isoformat(),
        "to": inputs.as_of.isoformat(),
        "counts": {r: {c: int(mig.loc[r, c]) for c in mig.columns} for r in mig.index},
    }
    report["backtest"] = {}
    latest = None
    for day in sorted(inputs.matured):
        feats, y = inputs.matured[day]
        scored = model.score_frame(feats, with_reasons=False)
        report["backtest"][day.isoformat()] = backtest(
            scored.risk_class.to_numpy(), scored.pd.to_numpy(), y
        )
        latest = (day, feats, scored, y)
    if latest is not None:
        day, feats, scored, y = latest
        report["slices"] = {
            "as_of": day.isoformat(),
            "rows": slice_table(slice_frame(feats, scored, y)),
        }
    miscalibrated = [
        f"{r['dimension']}={r['slice']}"
        for r in report.get("slices", {}).get("rows", [])
        if r["miscalibrated"]
    ]
    report["summary"] = {
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
    return report


# --- rendering ----------------------------------------------------------------------------------


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(report: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    bins = report["score_psi"]["bins"]
    fig, ax = plt.subplots(figsize=(8, 3))
    x = np.arange(len(bins))
    ax.bar(x - 0.2, [b["reference"] for b in bins], 0.4, label="reference")
    ax.bar(x + 0.2, [b["current"] for b in bins], 0.4, label=f"as of {report['as_of']}")
    ax.set_xticks(x, [b["bin"] for b in bins], rotation=45, ha="right", fontsize=7)
    ax.set_title(f"score distribution, PSI {report['score_psi']['psi']:.3f}")
    ax.legend()
    out["score_psi"] = _png(fig)

    csi = report["feature_csi"]
    names = list(csi)
    fig, ax = plt.subplots(figsize=(8, 6))
    vals = [csi[n]["psi"] for n in names]
    colors = [
        "tab:red" if v >= MODERATE else "tab:orange" if v >= STABLE else "tab:green" for v in vals
    ]
    ax.barh(names, vals, color=colors)
    ax.axvline(STABLE, ls="--", c="grey")
    ax.axvline(MODERATE, ls="--", c="black")
    ax.set_title("characteristic stability (CSI) per feature")
    ax.tick_params(axis="y", labelsize=7)
    out["feature_csi"] = _png(fig)

    counts = report["migration"]["counts"]
    cols = list(next(iter(counts.values())))
    mat = np.array([[counts[r][c] for c in cols] for r in counts])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.imshow(mat, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(counts)), list(counts))
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, f"{mat[i, j]:,}", ha="center", va="center", fontsize=7)
    ax.set_xlabel(f"class on {report['migration']['to']}")
    ax.set_ylabel(f"class on {report['migration']['from']}")
    out["migration"] = _png(fig)

    if report["backtest"]:
        fig, ax = plt.subplots(figsize=(8, 3))
        for day, rows in report["backtest"].items():
            ax.plot(
                [r["class"] for r in rows if r["n"]],
                [r["observed_rate"] for r in rows if r["n"]],
                "o-",
                label=f"observed {day}",
            )
        last = list(report["backtest"].values())[-1]
        ax.plot(
            [r["class"] for r in last if r["n"]],
            [r["predicted_rate"] for r in last if r["n"]],
            "k--",
            label="predicted (latest)",
        )
        ax.set_yscale("log")
        ax.set_title("back-test: adverse-event rate per class")
        ax.legend(fontsize=7)
        out["backtest"] = _png(fig)

    if "slices" in report:
        rows = report["slices"]["rows"]
        fig, ax = plt.subplots(figsize=(8, 5))
        labels = [f"{r['dimension']}={r['slice']}" for r in rows]
        ax.barh(labels, [r["d_rate_ratio"] or 0 for r in rows])
        ax.axvline(1.0, c="black", ls="--")
        ax.set_title("class-D share of each slice / overall")
        ax.tick_params(axis="y", labelsize=6)
        out["slices"] = _png(fig)
    return out


def render_html(report: dict, images: dict[str, str]) -> str:
    def img(key: str) -> str:
        return (
            f'<img alt="{key}" src="data:image/png;base64,{images[key]}"/>' if key in images else ""
        )

    def table(rows: list[dict], cols: list[str]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    s = report["summary"]
    csi_rows = [
        {"feature": n, "csi": v["psi"], "verdict": v["verdict"]}
        for n, v in report["feature_csi"].items()
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>credref monitoring {report['as_of']}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".significant{color:#b00}</style></head><body>",
        f"<h1>credref monitoring — as of {report['as_of']}</h1>",
        f"<p>model version {html.escape(report['model_version'])}, catalogue "
        f"{html.escape(report['catalogue_version'])}; reference rows {report['rows']['reference']:,} "
        f"(as of {', '.join(report['reference_as_of'])}), "
        f"current rows {report['rows']['current']:,}.</p>",
        f"<p>Score PSI <b>{s['score_psi']:.3f}</b> ({s['score_verdict']}); largest CSI "
        f"{s['max_csi']:.3f}; {s['features_flagged']} feature(s) at or above {STABLE}; "
        f"cities shifted: {', '.join(s['segments_flagged']) or 'none'}; "
        f"{s['backtest_inconsistent_classes']} back-test class(es) inconsistent at 5%.</p>",
        "<h2>Score stability</h2>",
        img("score_psi"),
        "<h2>Score stability by city</h2>",
        table(
            [{"city": k, **v} for k, v in report["segment_psi"]["segments"].items()],
            ["city", "rows", "psi", "verdict"],
        ),
        "<h2>Feature stability (CSI)</h2>",
        img("feature_csi"),
        table(csi_rows, ["feature", "csi", "verdict"]),
        f"<h2>Class migration {report['migration']['from']} → {report['migration']['to']}</h2>",
        img("migration"),
        "<h2>Back-test</h2>",
        img("backtest"),
    ]
    for day, rows in report["backtest"].items():
        parts += [
            f"<h3>{day}</h3>",
            table(
                rows,
                [
                    "class",
                    "n",
                    "events",
                    "predicted_rate",
                    "observed_rate",
                    "p_value",
                    "consistent",
                ],
            ),
        ]
    if "slices" in report:
        parts += [
            f"<h2>Slices ({report['slices']['as_of']})</h2>",
            img("slices"),
            table(
                report["slices"]["rows"],
                [
                    "dimension",
                    "slice",
                    "n",
                    "auc",
                    "mean_pd",
                    "observed_rate",
                    "calibration_ratio",
                    "share_A",
                    "share_B",
                    "share_C",
                    "share_D",
                    "d_rate_ratio",
                ],
            ),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}"
    return html.escape("" if v is None else str(v))


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    j, h = out / "report.json", out / "report.html"
    j.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    h.write_text(render_html(report, plots(report)), encoding="utf-8")
    return j, h


# --- gathering the inputs from the warehouse and MLflow -----------------------------------------


def _month_end_back(d: date, months: int) -> date:
    from features.dataset import month_end

    m = d.year * 12 + d.month - 1 - months
    return month_end(m // 12, m % 12 + 1)


def gather(con, as_of: date, reference: pd.DataFrame, matured_count: int = 4) -> MonitorInputs:
    """Features on T and a year before, and the latest matured quarter ends with labels."""
    from features.dataset import labelable, observed_through
    from features.engines import DuckDBEngine

    engine = DuckDBEngine(con)
    through = observed_through(con)
    previous = _month_end_back(as_of, 12)
    matured: dict[date, tuple[pd.DataFrame, np.ndarray]] = {}
    d = as_of
    while len(matured) < matured_count and d.year >= 2020:
        if d.month in (3, 6, 9, 12) and labelable(d, 12, through):
            feats = engine.features(d).to_pandas()
            labels = engine.labels(d).to_pandas()
            if not feats.uscc.equals(labels.uscc):
                raise AssertionError(f"{d}: features and labels cover different households")
            matured[d] = (feats, labels["label"].to_numpy())
        d = _month_end_back(d, 1)
    return MonitorInputs(
        as_of=as_of,
        reference=reference,
        current=engine.features(as_of).to_pandas(),
        previous_as_of=previous,
        previous=engine.features(previous).to_pandas(),
        matured=matured,
    )


def champion_reference(registered_model: str) -> tuple[str, str, pd.DataFrame]:
    """(version, run id, reference rows) of the champion, from the active MLflow store."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from training.registry import CHAMPION

    client = MlflowClient()
    mv = client.get_model_version_by_alias(registered_model, CHAMPION)
    try:
        path = client.download_artifacts(mv.run_id, REFERENCE_ARTIFACT, tempfile.mkdtemp())
    except Exception as e:
        raise ValueError(
            f"champion v{mv.version} has no {REFERENCE_ARTIFACT}; retrain it with this code"
        ) from e
    return str(mv.version), mv.run_id, pd.read_parquet(path)


def log_to_mlflow(report: dict, files: tuple[Path, Path], champion_run: str) -> str:
    """Log the monitoring run in the champion's experiment; returns its run id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient().get_run(champion_run).info.experiment_id
    with mlflow.start_run(experiment_id=experiment, run_name=f"monitor {report['as_of']}") as run:
        mlflow.set_tags(
            {
                "kind": "monitoring",
                "as_of": report["as_of"],
                "model_version": report["model_version"],
                "champion_run_id": champion_run,
            }
        )
        s = report["summary"]
        mlflow.log_metrics(
            {
                "score_psi": s["score_psi"],
                "max_csi": s["max_csi"],
                "features_flagged": s["features_flagged"],
                "backtest_inconsistent_classes": s["backtest_inconsistent_classes"],
            }
        )
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="monitoring")
    return run.info.run_id
