"""The monitoring report as a page: plots (base64 PNG) and HTML tables from the figures
of :mod:`governance.monitor_metrics`, and the two files (``report.json``, ``report.html``)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from governance.monitor_metrics import MODERATE, STABLE
from training.plots import pyplot


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(report: dict) -> dict[str, str]:
    """Each figure of the report as base64 PNG, by section."""
    out = {
        "score_psi": _score_plot(report),
        "feature_csi": _csi_plot(report["feature_csi"]),
        "migration": _migration_plot(report["migration"]),
    }
    if report["backtest"]:
        out["backtest"] = _backtest_plot(report["backtest"])
    if "slices" in report:
        out["slices"] = _slices_plot(report["slices"]["rows"])
    return out


def _score_plot(report: dict) -> str:
    bins = report["score_psi"]["bins"]
    fig, ax = pyplot().subplots(figsize=(8, 3))
    x = np.arange(len(bins))
    ax.bar(x - 0.2, [b["reference"] for b in bins], 0.4, label="reference")
    ax.bar(x + 0.2, [b["current"] for b in bins], 0.4, label=f"as of {report['as_of']}")
    ax.set_xticks(x, [b["bin"] for b in bins], rotation=45, ha="right", fontsize=7)
    ax.set_title(f"score distribution, PSI {report['score_psi']['psi']:.3f}")
    ax.legend()
    return _png(fig)


def _csi_plot(csi: dict) -> str:
    names = list(csi)
    fig, ax = pyplot().subplots(figsize=(8, 6))
    vals = [csi[n]["psi"] for n in names]
    colors = [
        "tab:red" if v >= MODERATE else "tab:orange" if v >= STABLE else "tab:green" for v in vals
    ]
    ax.barh(names, vals, color=colors)
    ax.axvline(STABLE, ls="--", c="grey")
    ax.axvline(MODERATE, ls="--", c="black")
    ax.set_title("characteristic stability (CSI) per feature")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def _migration_plot(migration: dict) -> str:
    counts = migration["counts"]
    cols = list(next(iter(counts.values())))
    mat = np.array([[counts[r][c] for c in cols] for r in counts])
    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    ax.imshow(mat, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(counts)), list(counts))
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, f"{mat[i, j]:,}", ha="center", va="center", fontsize=7)
    ax.set_xlabel(f"class on {migration['to']}")
    ax.set_ylabel(f"class on {migration['from']}")
    return _png(fig)


def _backtest_plot(backtest: dict) -> str:
    fig, ax = pyplot().subplots(figsize=(8, 3))
    for day, rows in backtest.items():
        ax.plot(
            [r["class"] for r in rows if r["n"]],
            [r["observed_rate"] for r in rows if r["n"]],
            "o-",
            label=f"observed {day}",
        )
    last = list(backtest.values())[-1]
    ax.plot(
        [r["class"] for r in last if r["n"]],
        [r["predicted_rate"] for r in last if r["n"]],
        "k--",
        label="predicted (latest)",
    )
    ax.set_yscale("log")
    ax.set_title("back-test: adverse-event rate per class")
    ax.legend(fontsize=7)
    return _png(fig)


def _slices_plot(rows: list[dict]) -> str:
    fig, ax = pyplot().subplots(figsize=(8, 5))
    labels = [f"{r['dimension']}={r['slice']}" for r in rows]
    ax.barh(labels, [r["d_rate_ratio"] or 0 for r in rows])
    ax.axvline(1.0, c="black", ls="--")
    ax.set_title("class-D share of each slice / overall")
    ax.tick_params(axis="y", labelsize=6)
    return _png(fig)


BACKTEST_COLUMNS = [
    "class",
    "n",
    "events",
    "predicted_rate",
    "observed_rate",
    "p_value",
    "consistent",
]
SLICE_COLUMNS = [
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
]


def render_html(report: dict, images: dict[str, str]) -> str:
    """One self-contained page: the summary, then each section with its plot and table."""

    def img(key: str) -> str:
        return (
            f'<img alt="{key}" src="data:image/png;base64,{images[key]}"/>' if key in images else ""
        )

    csi_rows = [
        {"feature": n, "csi": v["psi"], "verdict": v["verdict"]}
        for n, v in report["feature_csi"].items()
    ]
    parts = [
        *_head(report),
        "<h2>Score stability</h2>",
        img("score_psi"),
        "<h2>Score stability by city</h2>",
        _table(
            [{"city": k, **v} for k, v in report["segment_psi"]["segments"].items()],
            ["city", "rows", "psi", "verdict"],
        ),
        "<h2>Feature stability (CSI)</h2>",
        img("feature_csi"),
        _table(csi_rows, ["feature", "csi", "verdict"]),
        f"<h2>Class migration {report['migration']['from']} → {report['migration']['to']}</h2>",
        img("migration"),
        "<h2>Back-test</h2>",
        img("backtest"),
    ]
    for day, rows in report["backtest"].items():
        parts += [f"<h3>{day}</h3>", _table(rows, BACKTEST_COLUMNS)]
    if "slices" in report:
        parts += [
            f"<h2>Slices ({report['slices']['as_of']})</h2>",
            img("slices"),
            _table(report["slices"]["rows"], SLICE_COLUMNS),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def _head(report: dict) -> list[str]:
    s = report["summary"]
    return [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>credref monitoring {report['as_of']}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".significant{color:#b00}</style></head><body>",
        f"<h1>credref monitoring — as of {report['as_of']}</h1>",
        f"<p><b>Verdict: {s['verdict']}.</b> "
        + (
            html.escape("; ".join(s["findings"])) + ".</p>"
            if s["findings"]
            else "Every test passes.</p>"
        ),
        f"<p>model version {html.escape(report['model_version'])}, catalogue "
        f"{html.escape(report['catalogue_version'])}; reference rows {report['rows']['reference']:,} "
        f"(as of {', '.join(report['reference_as_of'])}), "
        f"current rows {report['rows']['current']:,}.</p>",
        f"<p>Score PSI <b>{s['score_psi']:.3f}</b> ({s['score_verdict']}); largest CSI "
        f"{s['max_csi']:.3f}; {s['features_flagged']} feature(s) at or above {STABLE}; "
        f"cities shifted: {', '.join(s['segments_flagged']) or 'none'}; "
        f"{s['backtest_inconsistent_classes']} back-test class(es) inconsistent at 5%.</p>",
    ]


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


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
