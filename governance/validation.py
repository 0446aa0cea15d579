"""``credref validate``: the validation report of a registered model version, in the form
model validators expect (ECB's PD validation reporting, SR 11-7's outcomes analysis),
with a model card under the model-card headings (Mitchell et al., 2019).

Development: the version's own out-of-time test rows (logged with it at training). Now:
the latest as-of date whose 12-month outcomes have matured by ``--as-of`` (features and
labels from the warehouse), the current classes on ``--as-of`` and those a year before.
The statistics are :mod:`training.validation_stats`; population stability and slices are
the monitor's (:mod:`governance.monitor_metrics`, :mod:`training.evaluate`).
"""

from __future__ import annotations

import html
import json
import tempfile
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from features.dataset import labelable, month_end_back, observed_through
from features.engines import DuckDBEngine
from governance.monitor_metrics import migration, stability
from governance.style import STYLE
from scoring.model import CLASSES, ScoringModel
from training.by_month import by_month, failures, worst
from training.evaluate import slice_frame, slice_table
from training.registry import CHAMPION, load_version
from training.validation_stats import (
    auc_change,
    auc_delong,
    herfindahl,
    jeffreys,
    migration_stability,
)

TEST_ROWS = "evaluation/test_rows.parquet"
#: The model-card headings (Mitchell et al., 2019) of this report and the training card.
MODEL_CARD_HEADINGS = (
    "Intended use",
    "Out-of-scope use",
    "Factors",
    "Metrics, with intervals",
    "Data",
    "Slices",
    "Caveats",
)


@dataclass
class ValidationInputs:
    development: pd.DataFrame  # the version's test rows: features and label
    matured_as_of: date
    matured: pd.DataFrame  # features on a matured date
    matured_labels: np.ndarray
    as_of: date
    current: pd.DataFrame  # features on as_of (uscc + features)
    previous: pd.DataFrame  # features a year before (uscc + features)
    #: The population on the latest day, up to as_of, of development's calendar month:
    #: what the PSI compares with (features follow the reporting calendar, so a June
    #: development sample against a September population would measure the calendar).
    like_month_as_of: date | None = None
    like_month: pd.DataFrame | None = None
    #: The last twelve matured month ends: (features, labels) each, for quality on every
    #: calendar position.
    months: dict[date, tuple[pd.DataFrame, np.ndarray]] = field(default_factory=dict)


def _per_class(scored: pd.DataFrame, y: np.ndarray) -> list[dict]:
    rows = []
    for c in CLASSES:
        m = scored.risk_class.to_numpy() == c
        n, d = int(m.sum()), int(y[m].sum())
        pd_ = float(scored.pd.to_numpy()[m].mean()) if n else float("nan")
        p = jeffreys(d, n, pd_) if n else float("nan")
        rows.append(
            {
                "class": c,
                "n": n,
                "defaults": d,
                "pd": pd_,
                "observed": d / n if n else float("nan"),
                "jeffreys_p": p,
                "pd_too_low": bool(n and p < 0.05),
            }
        )
    return rows


def _by_month(model: ScoringModel, months: dict) -> pd.DataFrame:
    """Quality at each matured month end (``training.by_month``: AUC, ECE, class shares,
    class moves among households whose records did not move since the month before)."""
    if not months:
        return pd.DataFrame()
    frames = [f.assign(as_of=d) for d, (f, _) in sorted(months.items())]
    y = np.concatenate([y for _, (_, y) in sorted(months.items())])
    rows = pd.concat(frames, ignore_index=True)
    return by_month(rows, y, model.score_frame(rows, with_reasons=False), model.spec)


def build_validation(model: ScoringModel, inputs: ValidationInputs, version: str) -> dict:
    """Every figure of the report (pure: inputs in, a JSON-ready dict out)."""
    dev = inputs.development
    dev_scored = model.score_frame(dev, with_reasons=False)
    now_scored = model.score_frame(inputs.matured, with_reasons=False)
    y_dev, y_now = dev["label"].to_numpy(), inputs.matured_labels
    auc_dev = auc_delong(y_dev, dev_scored.pd.to_numpy())
    auc_now = auc_delong(y_now, now_scored.pd.to_numpy())
    cur = model.score_frame(inputs.current, with_reasons=False)
    prev = model.score_frame(inputs.previous, with_reasons=False)
    mig = migration(
        pd.Series(prev.risk_class.to_numpy(), index=inputs.previous.uscc.to_numpy()),
        pd.Series(cur.risk_class.to_numpy(), index=inputs.current.uscc.to_numpy()),
    )
    counts = [int((cur.risk_class == c).sum()) for c in CLASSES]
    like = inputs.like_month if inputs.like_month is not None else inputs.current
    like_as_of = inputs.like_month_as_of or inputs.as_of
    psi = stability(dev_scored["score"], model.score_frame(like, with_reasons=False)["score"])
    months = _by_month(model, inputs.months)
    return {
        "model_version": version,
        "catalogue_version": model.catalogue_version,
        "as_of": inputs.as_of.isoformat(),
        "matured_as_of": inputs.matured_as_of.isoformat(),
        "discriminatory_power": {
            "development": auc_dev,
            "now": auc_now,
            "change_test": auc_change(auc_dev, auc_now),
        },
        "by_month": months.to_dict(orient="records"),
        "worst_month": worst(months) if len(months) else {},
        "calibration_by_class": _per_class(now_scored, y_now),
        "concentration": {"counts": dict(zip(CLASSES, counts, strict=True)), **herfindahl(counts)},
        "migration": {
            "counts": {r: {c: int(mig.loc[r, c]) for c in mig.columns} for r in mig.index},
            **migration_stability(mig[list(CLASSES)].to_numpy()),
        },
        "population_stability": {
            "score_psi": psi["psi"],
            "verdict": psi["verdict"],
            "against": like_as_of.isoformat(),
        },
        "slices": slice_table(slice_frame(inputs.matured, now_scored, y_now)),
    }


#: The level of the report's tests: below it, a test's finding is stated.
ALPHA = 0.05


def findings(r: dict) -> list[str]:
    """What the report's own tests find, one line each (none: the version passes). The
    CLI's verdict, the HTML's and the JSON's are this list, so they cannot disagree."""
    found = []
    dp = r["discriminatory_power"]
    dev, now, p = dp["development"]["auc"], dp["now"]["auc"], dp["change_test"]["p_value"]
    if now < dev and p < ALPHA:
        found.append(f"discriminatory power fell: AUC {now:.4f} against {dev:.4f} (p {p:.4f})")
    for row in r["calibration_by_class"]:
        if row["pd_too_low"]:
            found.append(
                f"class {row['class']}: more adverse outcomes than its PD says "
                f"(Jeffreys p {row['jeffreys_p']:.4f})"
            )
    stability_said = r["population_stability"]["verdict"]
    if stability_said != "stable":
        psi = r["population_stability"]["score_psi"]
        found.append(f"the scored population moved: score PSI {psi:.4f} ({stability_said})")
    found += failures(r["worst_month"]) if r["worst_month"] else []
    return found


def with_verdict(r: dict) -> dict:
    """The report with its findings and its one-word verdict."""
    found = findings(r)
    return {**r, "findings": found, "verdict": "findings" if found else "passes"}


# --- the report as HTML, under the model-card headings ----------------------------------


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and all(isinstance(x, float) for x in v):
        return "–".join(f"{x:.3f}" for x in v)  # an interval
    return html.escape(str(v))


def render_html(r: dict) -> str:
    dp = r["discriminatory_power"]
    dev, now, test = dp["development"], dp["now"], dp["change_test"]
    ci = "{:.3f}–{:.3f}".format
    return f"""<!doctype html><meta charset="utf-8">
<title>Validation of model version {r["model_version"]}</title>
<style>{STYLE}</style>
<h1>Validation of model version {r["model_version"]} (as of {r["as_of"]})</h1>
<p class="verdict"><strong>Verdict: {r["verdict"]}.</strong> {_findings_html(r["findings"])}</p>
<h2>Intended use</h2><p>A credit-risk reference for payment platforms onboarding and
reviewing individual businesses (个体工商户) of the pilot cities: a score, class A–D and at
most four reasons, from records usable under the publicity and credit-repair rules.</p>
<h2>Out-of-scope use</h2><p>Lending decisions on its own; any use on households outside
the register or on records no longer usable; inferring the underlying records.</p>
<h2>Factors</h2><p>City, organisational form and registration age (slices below).</p>
<h2>Metrics, with intervals</h2>
<p>AUC at development {dev["auc"]:.4f} (95% CI {ci(*dev["ci"])}, n = {dev["n"]}); now
{now["auc"]:.4f} (95% CI {ci(*now["ci"])}, n = {now["n"]}, outcomes of
{r["matured_as_of"]}). Test of the change (ECB): S = {test["statistic"]:.3f}, p =
{test["p_value"]:.4f} (small: power has fallen).</p>
<h3>Quality on every calendar position (the last twelve matured month ends)</h3>
<p>{_verdict(r["worst_month"])}</p>{_table(r["by_month"])}
<h3>Calibration per class (Jeffreys test)</h3>{_table(r["calibration_by_class"])}
<h3>Concentration</h3><p>Herfindahl {r["concentration"]["hhi"]:.4f}, normalised
{r["concentration"]["normalised"]:.4f} over classes {r["concentration"]["counts"]}.</p>
<h3>Migration stability (a year to {r["as_of"]})</h3><p>stayed
{r["migration"]["stayed"]:.2%}, moved one class {r["migration"]["moved_one"]:.2%}, moved
more {r["migration"]["moved_more"]:.2%} of {r["migration"]["households"]} households.</p>
<h3>Population stability</h3><p>Score PSI against development
{r["population_stability"]["score_psi"]:.4f} ({r["population_stability"]["verdict"]}),
on the population of {r["population_stability"]["against"]}: the latest day of
development's calendar month (features follow the reporting calendar).</p>
<h2>Data</h2><p>Development: the version's out-of-time test rows. Now: features and
12-month outcomes from the warehouse, catalogue {r["catalogue_version"]}.</p>
<h2>Slices</h2>{_table(r["slices"])}
<h2>Caveats</h2><p>Outcomes are the publication of adverse records within 12 months, not
defaults on credit; the latest matured date is a year behind the as-of date. The power
depends on the season (the PD knows the reporting calendar; the score and class do not):
compare the months above before reading one figure.</p>
"""


def _findings_html(found: list[str]) -> str:
    if not found:
        return "Every test of this report passes at the 5% level."
    return "<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in found) + "</ul>"


def _verdict(w: dict) -> str:
    if not w:
        return "No matured month end."
    found = failures(w)
    if found:
        return "Below target: " + html.escape("; ".join(found)) + "."
    return (
        f"Every month meets the targets: worst ECE {w['worst_month_ece']:.4f}, worst AUC "
        f"{w['worst_month_auc']:.4f}, class moves without an event at most "
        f"{w['worst_month_class_moves_without_event'] or 0:.2%} in a month."
    )


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True, default=float)


# --- gathering the inputs and logging the report ------------------------------------------


def gather(
    con, as_of: date, development: pd.DataFrame, development_as_of: date | None = None
) -> ValidationInputs:
    """From the warehouse: the last twelve month ends whose outcomes have matured by
    ``as_of`` (features and labels; the latest is "now"), the features on ``as_of``, a
    year before, and on the latest day of development's calendar month."""

    engine = DuckDBEngine(con)
    through = min(observed_through(con), as_of)
    d = month_end_back(as_of, 12)
    while not labelable(d, 12, through):
        d = month_end_back(d, 1)
    months = {}
    for m in (d, *(month_end_back(d, k) for k in range(1, 12))):
        f, labels = engine.features(m).to_pandas(), engine.labels(m).to_pandas()
        if not f.uscc.equals(labels.uscc):
            raise AssertionError(f"{m}: features and labels cover different households")
        months[m] = (f, labels["label"].to_numpy())
    feats, matured_labels = months[d]
    like_as_of = None
    if development_as_of is not None:
        like_as_of = month_end_back(as_of, (as_of.month - development_as_of.month) % 12)
        if like_as_of > as_of:  # as_of is before the month's end
            like_as_of = month_end_back(like_as_of, 12)
    return ValidationInputs(
        development=development,
        matured_as_of=d,
        matured=feats,
        matured_labels=matured_labels,
        as_of=as_of,
        current=engine.features(as_of).to_pandas(),
        previous=engine.features(month_end_back(as_of, 12)).to_pandas(),
        like_month_as_of=like_as_of,
        like_month=engine.features(like_as_of).to_pandas() if like_as_of else None,
        months=months,
    )


def run_validation(con, name: str, version: str | None, as_of: date) -> tuple[str, dict]:
    """Validate registered ``version`` (default: the champion) as of ``as_of``; the
    report (JSON and HTML) is logged to the version's MLflow run. Returns (version, report)."""

    client = MlflowClient()
    if version is None:
        version = str(client.get_model_version_by_alias(name, CHAMPION).version)
    run_id = client.get_model_version(name, version).run_id
    rows = pd.read_parquet(client.download_artifacts(run_id, TEST_ROWS, tempfile.mkdtemp()))
    model = load_version(name, version).unwrap_python_model().model
    test_as_of = client.get_run(run_id).data.params.get("test_as_of")
    dev_day = date.fromisoformat(test_as_of) if test_as_of else None
    report = with_verdict(build_validation(model, gather(con, as_of, rows, dev_day), version))
    client.log_text(run_id, to_json(report), f"validation/{as_of}/validation.json")
    client.log_text(run_id, render_html(report), f"validation/{as_of}/validation.html")
    return version, report
