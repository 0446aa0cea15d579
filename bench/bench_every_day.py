"""Benchmark: the champion served on every day of the demo domain's last full year.

The demo's warehouse is refreshed in place for every day from 2025-09-30 to 2026-09-29
(the last day its records reach), through the real refresh path, and every operating
household is scored from each day's publication. Per day: class shares, mean PD (on the
day), median score, how many households changed class since the day before, and how
many of those had no event of their own (record features as the day before: no record
learnt, no deadline passed, no window ended for them). On the reporting turns (1 January,
1 July) the change is decomposed into households with and without an event. A platform
watching 5,000 merchants counts its class_changed events and those without an event.

    make demo && .venv/bin/python bench/bench_every_day.py      # ~25 min on 2 cores

Writes bench/out/every_day/days.csv, summary.json and bench/figures/every_day.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from measure import machine  # noqa: E402

from features.catalogue import FEATURE_NAMES  # noqa: E402
from online_store.reader import OnlineStore, mirror_path  # noqa: E402
from online_store.refresh import RefreshTask, refresh  # noqa: E402
from serving.events import watched_frame  # noqa: E402
from training.by_month import standing_view  # noqa: E402

FIRST, LAST = date(2025, 9, 30), date(2026, 9, 29)
WATCHED = 5_000
TURNS = (date(2026, 1, 1), date(2026, 7, 1))
#: The days whose reasons are computed (TreeSHAP over every household takes seconds):
#: the issue's table, the reporting turns and their eves, and each month's 15th.
REASON_DAYS = {
    date(2025, 12, 31), date(2026, 1, 1), date(2026, 2, 15), date(2026, 3, 31),
    date(2026, 5, 15), date(2026, 6, 30), date(2026, 7, 1), date(2026, 8, 15),
}  # fmt: skip


def champion(home: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from training.registry import CHAMPION, load_version

    mlflow.set_tracking_uri(f"sqlite:///{(home / 'mlflow.db').resolve()}")
    version = MlflowClient().get_model_version_by_alias("credref-reference", CHAMPION).version
    return str(version), load_version("credref-reference", str(version)).unwrap_python_model().model


def day_answers(online: Path, model, with_reasons: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Record features and answers (class, score, PD; the first reason on the days asked)
    of every operating household in the current publication, read from its Parquet
    mirror as the change-feed step reads it."""
    with OnlineStore(online).current() as snap:
        mirror = mirror_path(snap.path.parent, snap.name)
        codes = pq.read_table(mirror, columns=["uscc"]).column("uscc").to_pylist()
        frame = watched_frame(snap, codes)
    op = frame[(frame.status == "operating") & frame[FEATURE_NAMES[0]].notna()]
    op = op.set_index("uscc").sort_index()
    scored = model.score_frame(op[list(FEATURE_NAMES)], with_reasons=with_reasons)
    if with_reasons:
        scored["first_reason"] = scored.reasons.str.split(";").str[0]
    return standing_view(op, model.spec), scored


def compare(before, after) -> dict:
    """Class changes since the day before, split by whether the household had an event."""
    (rec0, sc0), (rec1, sc1) = before, after
    both = rec0.index.intersection(rec1.index)
    a, b = rec0.loc[both], rec1.loc[both]
    quiet = ((a == b) | (a.isna() & b.isna())).all(axis=1).to_numpy()
    moved = sc0.risk_class.loc[both].to_numpy() != sc1.risk_class.loc[both].to_numpy()
    # the day's change of the mean PD, split into what each group's households add
    delta = (sc1.pd.loc[both].to_numpy() - sc0.pd.loc[both].to_numpy()) / len(both)
    return {
        "both": len(both),
        "pd_change_with_event": float(delta[~quiet].sum()),
        "pd_change_without_event": float(delta[quiet].sum()),
        "moved": int(moved.sum()),
        "with_event": int((~quiet).sum()),
        "moved_with_event": int((moved & ~quiet).sum()),
        "without_event": int(quiet.sum()),
        "moved_without_event": int((moved & quiet).sum()),
        "codes_moved_without_event": list(both[moved & quiet]),
        "codes_moved_with_event": list(both[moved & ~quiet]),
    }


def shares(sc: pd.DataFrame) -> dict:
    return {f"class_{c}": float((sc.risk_class == c).mean()) for c in "ABCD"}


def decomposition(before, after) -> dict:
    """Class shares before and after, among households with and without an event."""
    (rec0, sc0), (rec1, sc1) = before, after
    both = rec0.index.intersection(rec1.index)
    a, b = rec0.loc[both], rec1.loc[both]
    quiet = pd.Series(((a == b) | (a.isna() & b.isna())).all(axis=1).to_numpy(), index=both)
    out = {}
    for name, codes in (("with_event", both[~quiet]), ("without_event", both[quiet])):
        out[name] = {
            "households": len(codes),
            "before": shares(sc0.loc[codes]),
            "after": shares(sc1.loc[codes]),
            "mean_pd_before": float(sc0.pd.loc[codes].mean()) if len(codes) else None,
            "mean_pd_after": float(sc1.pd.loc[codes].mean()) if len(codes) else None,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=ROOT / "var/demo")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/every_day")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    wh, online = args.out / "wh.duckdb", args.out / "online"
    shutil.copy(args.demo / "warehouse.duckdb", wh)
    version, model = champion(args.demo)
    rng = np.random.default_rng(7)
    rows, turns, started, history = [], {}, time.perf_counter(), {}
    previous, watched, watch_events = None, None, {"with_event": 0, "without_event": 0}
    day, refresh_s = FIRST, []
    while day <= LAST:
        t0 = time.perf_counter()
        refresh(RefreshTask(wh, None, online, b"bench-secret", as_of=day, force=True))
        refresh_s.append(time.perf_counter() - t0)
        current = day_answers(online, model, day in REASON_DAYS)
        rec, sc = current
        if watched is None:
            watched = set(rng.choice(rec.index.to_numpy(), WATCHED, replace=False))
        row = {
            "as_of": day.isoformat(),
            "households": len(sc),
            **shares(sc),
            "mean_pd": float(sc.pd.mean()),
            "median_score": float(sc.score.median()),
            "first_reason_R04": float((sc.first_reason == "R04").mean())
            if "first_reason" in sc
            else None,
        }
        if previous is not None:
            c = compare(previous, current)
            row |= {k: v for k, v in c.items() if not k.startswith("codes_")}
            watch_events["with_event"] += len(watched.intersection(c["codes_moved_with_event"]))
            watch_events["without_event"] += len(
                watched.intersection(c["codes_moved_without_event"])
            )
            if day in TURNS:
                turns[day.isoformat()] = decomposition(previous, current)
        rows.append(row)
        history[day] = (
            pd.util.hash_pandas_object(rec, index=False).set_axis(rec.index),
            sc.risk_class.astype("category"),
        )
        previous = current
        print(
            json.dumps({k: row[k] for k in ("as_of", "class_A", "class_D", "mean_pd")}), flush=True
        )
        day += timedelta(days=1)
    days = pd.DataFrame(rows)
    days.to_csv(args.out / "days.csv", index=False)
    summary = summarise(days, turns, watch_events, version, time.perf_counter() - started)
    summary["over_30_days"] = thirty_days(history)
    summary["refresh_seconds"] = {
        "median": float(np.median(refresh_s)),
        "max": float(np.max(refresh_s)),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(days, ROOT / "bench/figures/every_day.png")
    print(json.dumps(summary, indent=2))


def thirty_days(history: dict) -> dict:
    """Among households whose record features are the same on a day and 30 days later,
    the share whose class differs: the largest over every such pair of days."""
    worst, on = 0.0, None
    for day, (h0, c0) in history.items():
        later = history.get(day + timedelta(days=30))
        if later is None:
            continue
        h1, c1 = later
        both = h0.index.intersection(h1.index)
        quiet = both[(h0.loc[both].to_numpy() == h1.loc[both].to_numpy())]
        share = float((c0.loc[quiet].to_numpy() != c1.loc[quiet].to_numpy()).mean())
        if share > worst:
            worst, on = share, day.isoformat()
    return {"moves_without_event_max": worst, "from": on}


def summarise(days: pd.DataFrame, turns: dict, watch: dict, version: str, seconds: float) -> dict:
    d = days.dropna(subset=["without_event"])
    daily = d.moved_without_event / d.without_event
    total = watch["with_event"] + watch["without_event"]
    return {
        "machine": machine(),
        "date": date.today().isoformat(),
        "model_version": version,
        "days": len(days),
        "seconds": round(seconds, 1),
        "moves_without_event_daily_max": float(daily.max()),
        "moves_without_event_daily_max_on": d.as_of[daily.idxmax()],
        "moves_without_event_on_turns": {
            t: float(daily[d.as_of == t].iloc[0])
            for t in ("2025-12-31", "2026-01-01", "2026-06-30", "2026-07-01")
            if (d.as_of == t).any()
        },
        "moves_all_daily_max": float((d.moved / d.both).max()),
        "class_A_range": [float(days.class_A.min()), float(days.class_A.max())],
        "class_D_range": [float(days.class_D.min()), float(days.class_D.max())],
        "mean_pd_range": [float(days.mean_pd.min()), float(days.mean_pd.max())],
        "largest_day_change": {
            c: float(days[c].diff().abs().max()) for c in ("class_A", "class_D", "mean_pd")
        },
        "largest_mean_pd_change_on": days.as_of[days.mean_pd.diff().abs().idxmax()],
        "largest_pd_change_without_event": float(d.pd_change_without_event.abs().max()),
        "largest_pd_change_without_event_on": d.as_of[d.pd_change_without_event.abs().idxmax()],
        "largest_pd_change_with_event": float(d.pd_change_with_event.abs().max()),
        "first_reason_R04_on": {
            d.isoformat(): float(days.first_reason_R04[days.as_of == d.isoformat()].iloc[0])
            for d in sorted(REASON_DAYS)
        },
        "turns": turns,
        "watch_5000": {
            **watch,
            "share_without_event": watch["without_event"] / total if total else None,
        },
    }


def plot(days: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    x = pd.to_datetime(days.as_of)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for c in "ABCD":
        top.plot(x, days[f"class_{c}"], label=f"class {c}")
    top.set_ylabel("share of operating households")
    top.set_title("Class shares and PD on every day of a year (demo domain, champion)")
    top.legend(loc="upper right")
    bottom.plot(x, days.mean_pd, label="mean PD on the day", color="black")
    moved = days.moved_without_event / days.without_event
    bottom.plot(x, moved, label="class moves without an event (share, day on day)", color="red")
    bottom.set_ylabel("share")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
