"""``credref impact``: what a challenger would change, before it is promoted.

Both the champion and the challenger score the same population, the households of the
latest publication that are operating. The report is what the switch would do to them:
- the class migration matrix (champion class by challenger class);
- the share of households changing class, overall and by city;
- the score shift (mean and quantiles of challenger minus champion);
- how often the first reason changes, and each model's top reasons;
- for each platform with a watch list (:mod:`serving.watch`), how many of its watched
  households would change class: what its change feed would tell it at the switch.
It is written as JSON and HTML (with the migration heat map) and logged to the
challenger's MLflow run. The promotion gate reads the share changing class.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from features.catalogue import FEATURE_NAMES
from governance.style import STYLE
from online_store.reader import OnlineStore
from scoring.model import ScoringModel
from serving.state import Postgres
from serving.watch import WatchStore
from training.plots import pyplot
from training.registry import champion_version, load_version

CLASSES = ("A", "B", "C", "D")


@dataclass
class Impact:
    households: int
    changed_share: float
    migration: dict[str, dict[str, int]]  # champion class -> challenger class -> count
    changed_share_by_city: dict[str, float]
    score_shift: dict[str, float]
    first_reason_changed_share: float
    top_reasons: dict[str, dict[str, int]]  # model -> reason code -> households
    #: platform -> {"watched": operating households it watches, "changed": how many move}
    watched_by_platform: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def population(online: Path) -> pd.DataFrame:
    """The operating households of the online store's current publication, with their
    features (the calendar-derived ones for its day)."""

    with OnlineStore(online).current() as snap:
        df = snap.frame()
    df = df[(df.status == "operating") & df[FEATURE_NAMES[0]].notna()]
    return df.drop(columns="status").reset_index(drop=True)


def watched_codes(online: Path, watch: Path | Postgres | None) -> dict[str, set[str]]:
    """Each platform's watched codes on the publication's day (none without a store)."""
    if watch is None or (isinstance(watch, Path) and not watch.exists()):
        return {}

    with OnlineStore(online).current() as snap:
        day = snap.day
    return WatchStore(watch).by_platform(day)


def impact(
    features: pd.DataFrame,
    champion: ScoringModel,
    challenger: ScoringModel,
    watched: dict[str, set[str]] | None = None,
) -> Impact:
    """Score ``features`` (catalogue columns and ``uscc``, one row per household) with both
    models; ``watched``: each platform's watched codes."""
    X = features[list(FEATURE_NAMES)]
    a, b = champion.score_frame(X), challenger.score_frame(X)
    changed = a["risk_class"].to_numpy() != b["risk_class"].to_numpy()
    matrix = pd.crosstab(a["risk_class"], b["risk_class"]).reindex(
        index=CLASSES, columns=CLASSES, fill_value=0
    )
    city = features["city"].astype(str).to_numpy()
    by_city = {c: float(changed[city == c].mean()) for c in sorted(set(city))}
    shift = b["score"].to_numpy(float) - a["score"].to_numpy(float)
    first_a = a["reasons"].str.split(";").str[0]
    first_b = b["reasons"].str.split(";").str[0]
    codes = features["uscc"].to_numpy() if "uscc" in features else np.array([], dtype=object)
    per_platform = {}
    for platform, mine in sorted((watched or {}).items()):
        rows = np.isin(codes, list(mine))
        per_platform[platform] = {"watched": int(rows.sum()), "changed": int(changed[rows].sum())}
    return Impact(
        households=len(X),
        changed_share=float(changed.mean()) if len(X) else 0.0,
        migration={r: {c: int(matrix.at[r, c]) for c in CLASSES} for r in CLASSES},
        changed_share_by_city=by_city,
        score_shift={
            "mean": float(shift.mean()),
            "p05": float(np.quantile(shift, 0.05)),
            "p50": float(np.quantile(shift, 0.5)),
            "p95": float(np.quantile(shift, 0.95)),
        },
        first_reason_changed_share=float((first_a != first_b).mean()),
        top_reasons={
            "champion": {str(k): int(v) for k, v in first_a.value_counts().head(5).items()},
            "challenger": {str(k): int(v) for k, v in first_b.value_counts().head(5).items()},
        },
        watched_by_platform=per_platform,
    )


def _heatmap_png(im: Impact) -> str:

    plt = pyplot()
    m = np.array([[im.migration[r][c] for c in CLASSES] for r in CLASSES])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(m, cmap="Blues")
    for i in range(4):
        for j in range(4):
            ax.text(j, i, f"{m[i, j]:,}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(4), CLASSES)
    ax.set_yticks(range(4), CLASSES)
    ax.set_xlabel("challenger class")
    ax.set_ylabel("champion class")
    ax.set_title("Class migration")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(im: Impact, title: str) -> str:
    rows = "".join(
        f"<tr><td>{city}</td><td>{share:.2%}</td></tr>"
        for city, share in im.changed_share_by_city.items()
    )
    s = im.score_shift
    watched = "".join(
        f"<tr><td>{p}</td><td>{w['watched']:,}</td><td>{w['changed']:,}</td></tr>"
        for p, w in im.watched_by_platform.items()
    )
    if watched:
        watched = (
            "<h2>Watched households changing class, by platform</h2><table><tr>"
            f"<th>platform</th><th>watched</th><th>changing class</th></tr>{watched}</table>"
        )
    return f"""<!doctype html><meta charset="utf-8"><title>{title}</title>
<style>{STYLE}</style>
<h1>{title}</h1>
<p>{im.households:,} operating households of the latest publication;
<b>{im.changed_share:.2%}</b> would change class; the first reason changes for
{im.first_reason_changed_share:.2%}.</p>
<p>Score shift (challenger − champion): mean {s["mean"]:.1f}, 5% {s["p05"]:.0f},
median {s["p50"]:.0f}, 95% {s["p95"]:.0f}.</p>
<img alt="class migration" src="data:image/png;base64,{_heatmap_png(im)}">
<h2>Share changing class, by city</h2><table><tr><th>city</th><th>share</th></tr>{rows}</table>
{watched}
"""


def run_impact(
    name: str, version: str | None, online: Path, watch: Path | Postgres | None = None
) -> tuple[str, str, Impact] | None:
    """Impact of registered ``version`` (default: the newest) against the champion on
    the population of the online store's current publication, logged to the version's MLflow run. None when there is
    no champion other than it (nothing would change hands)."""

    client = MlflowClient()
    if version is None:
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ValueError(f"no registered model named {name!r}; run `credref train` first")
        version = str(max(int(v.version) for v in versions))
    current = champion_version(client, name)
    if current is None or current == version:
        return None

    def model(v: str) -> ScoringModel:
        return load_version(name, v).unwrap_python_model().model

    im = impact(population(online), model(current), model(version), watched_codes(online, watch))
    run_id = client.get_model_version(name, version).run_id
    title = f"Impact of version {version} against champion {current}"
    client.log_text(run_id, im.to_json(), "impact/impact.json")
    client.log_text(run_id, render_html(im, title), "impact/impact.html")
    return current, version, im
