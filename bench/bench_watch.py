"""Benchmark: merchant monitoring on the 11M pilot, 1,000,000 households watched by three
platforms.

Uses the 11M online store and warehouse that ``bench_refresh.py`` leaves in
bench/out/refresh (published as of 2026-09-30), and the demo's champion (var/demo).

1. Watches: 1,000,000 operating households spread over three platforms with overlaps
   (alipay 500k, wechat 500k, douyin 400k; 1.4M watch rows), written through
   ``WatchStore.watch``; their first answers recorded as ``POST /v1/watch`` does
   (``serving.events.baseline``): time.
2. The next day's refresh (the calendar moves one day: publicity ends, ages), then the
   event step over the 1M watched households: the refresh's time and the event step's
   (target: the step adds at most 10 s), events by kind, peak memory.
3. ``GET /v1/changes``: the event table is filled to 300,000 events per platform (copies
   of real event bodies, class changes with four reasons: the largest kind), then a real
   2-worker server answers 100 calls/s, each for 1,000 events from a random cursor, for
   60 s (target p99 <= 100 ms, no errors), against a baseline of ``/v1/score`` at the
   same rate in the same run.

    python bench/bench_watch.py          # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_serve import service_env  # noqa: E402
from loadgen import run  # noqa: E402
from measure import machine, measure  # noqa: E402

from online_store.reader import OnlineStore  # noqa: E402
from online_store.refresh import RefreshTask, refresh  # noqa: E402
from scoring.served import load_served_model, use_store  # noqa: E402
from serving import launch  # noqa: E402
from serving.events import baseline, derive_events  # noqa: E402
from serving.watch import Cursors, WatchStore  # noqa: E402

SECRET = b"credref-development-secret-not-for-production"
WATCHED = 1_000_000
SPANS = {"alipay": (0, 500_000), "wechat": (300_000, 800_000), "douyin": (600_000, 1_000_000)}
EVENTS_PER_PLATFORM = 300_000
PORT = 3312


def _fig(m) -> dict:
    return {"wall_s": round(m.wall_s, 2), "peak_rss_gb": round(m.peak_rss_gb, 2)}


def _codes(online: Path, n: int) -> list[str]:
    """``n`` operating households, a fixed sample spread over the whole register."""
    with OnlineStore(online).current() as snap:
        rows = snap._con.execute(
            "SELECT uscc FROM subjects WHERE status = 'operating' ORDER BY uscc"
        ).fetchall()
    codes = [r[0] for r in rows]
    random.Random(0).shuffle(codes)
    return sorted(codes[:n])


def watch_all(store: WatchStore, online: Path, served, today: date) -> dict:
    codes = _codes(online, WATCHED)
    out: dict = {"watched_households": len(codes)}
    with measure() as m:
        for platform, (a, b) in SPANS.items():
            part = codes[a:b]
            store.watch(platform, f"key-{platform}", part, today, (10**7, 10**7))
    out["watch_rows"] = sum(b - a for a, b in SPANS.values())
    out["watch"] = _fig(m)
    with measure() as m, OnlineStore(online).current() as snap:
        baseline(store, snap, codes, served.model, served.version)
    out["first_answers"] = _fig(m)
    return out


def next_day(home: Path, store: WatchStore, served, day: date) -> dict:
    with measure() as m:
        r = refresh(
            RefreshTask(home / "wh.duckdb", None, home / "online", SECRET, as_of=day, force=True)
        )
    out = {"refresh": {**_fig(m), "rewritten": r.rewritten, "households": r.households}}
    with measure() as m, OnlineStore(home / "online").current() as snap:
        found = derive_events(store, snap, served.model, served.version)
    out["event_step"] = {**_fig(m), "events": found.events, "by_kind": found.by_kind}
    return out


def fill_events(store: WatchStore, per_platform: int) -> dict:
    """Copies of a real class-change event body (with four reasons) for watched codes."""
    con = sqlite3.connect(store.path)
    row = con.execute(
        "SELECT body FROM events WHERE kind = 'class_changed' ORDER BY length(body) DESC LIMIT 1"
    ).fetchone()
    body = json.loads(row[0]) if row else None
    if body is None:
        raise SystemExit("no class change among the day's events to copy")
    day = body["publication"]
    for platform in SPANS:
        codes = [
            r[0] for r in con.execute("SELECT subject FROM watches WHERE platform = ?", (platform,))
        ]
        rows = []
        for i in range(per_platform):
            code = codes[i % len(codes)]
            rows.append((platform, code, "class_changed", day, json.dumps({**body, "uscc": code})))
        con.executemany(
            "INSERT INTO events (platform, subject, kind, as_of, body) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        con.commit()
    n = con.execute("SELECT count(*), avg(length(body)) FROM events").fetchone()
    con.close()
    return {"events": n[0], "mean_event_bytes": round(n[1])}


def feed_under_load(home: Path, model_home: Path, store: WatchStore, rate: int, secs: int) -> dict:
    env = {**service_env(home, model_home, PORT), "CREDREF_MAX_SNAPSHOT_AGE_DAYS": "off"}
    env["CREDREF_WATCH_DB"] = str(store.path)
    os.environ.update(env)
    from serving.keys import KeyStore

    keys = KeyStore(home / "keys.sqlite")
    key = keys.create("alipay", ["score", "watch"], daily_households=10**8)[1]
    cursors = Cursors(SECRET)
    con = sqlite3.connect(store.path)
    ids = [r[0] for r in con.execute("SELECT id FROM events WHERE platform = 'alipay'")]
    con.close()
    rnd = random.Random(1)
    queries = [
        f"after={cursors.encode('alipay', ids[rnd.randrange(len(ids) - 2000)])}&limit=1000"
        for _ in range(2000)
    ]
    with OnlineStore(home / "online").current() as snap:
        scored = [
            {"uscc": r[0], "purpose": "onboarding"}
            for r in snap._con.execute(
                "SELECT uscc FROM subjects WHERE status = 'operating' LIMIT 20000"
            )
        ]
    headers = {"Authorization": f"Bearer {key}"}
    url = f"http://127.0.0.1:{PORT}"
    log = home / "service.log"
    proc = launch.start(env, log, workers=2)
    try:
        launch.wait_ready(f"{url}/readyz", proc, log, timeout=300)
        run(url, "/v1/changes", queries, headers, 20, 5)  # warm-up
        score = run(url, "/v1/score", scored, headers, rate, 20).summary()
        feed = run(url, "/v1/changes", queries, headers, rate, secs).summary()
    finally:
        launch.stop(proc)
    return {"rate": rate, "seconds": secs, "changes": feed, "score_same_rate": score}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=ROOT / "bench/out/refresh")
    ap.add_argument("--model-home", type=Path, default=ROOT / "var/demo")
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/watch.json")
    args = ap.parse_args()
    home = args.home.resolve()
    use_store(home / "bentoml")
    served = load_served_model(
        f"sqlite:///{(args.model_home / 'mlflow.db').resolve()}", "credref-reference"
    )
    path = home / "watch.sqlite"
    for p in home.glob("watch.sqlite*"):
        p.unlink()
    store = WatchStore(path)
    with OnlineStore(home / "online").current() as snap:
        today = snap.day
    result: dict = {"benchmark": "watch", "machine": machine(), "date": time.strftime("%F")}
    result["watches"] = watch_all(store, home / "online", served, today)
    print(json.dumps(result["watches"]), flush=True)
    result["day"] = next_day(home, store, served, today + timedelta(days=1))
    print(json.dumps(result["day"]), flush=True)
    result["fill"] = fill_events(store, EVENTS_PER_PLATFORM)
    result["feed"] = feed_under_load(home, args.model_home, store, args.rate, args.seconds)
    print(json.dumps(result["feed"]), flush=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
