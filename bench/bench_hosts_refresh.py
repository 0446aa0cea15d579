"""Benchmark: the daily refresh on several hosts of the 11M pilot (issue 28).

The refresh host keeps the warehouse and computes each day's difference once
(``credref refresh --share DIR``, DuckDB, capped at 3 GB); two serving hosts, each with
its own copy of the publication and no warehouse, apply it (``credref refresh --changes
DIR``, one process per host, as their timers run it: every day not yet applied). Uses the living export of
``bench_changesets.py`` (bench/out/living/export), generated here when missing.

1. A warehouse: the base export, then the change sets before ``--start``.
2. A full publication as of ``--start`` - 1 on the refresh host, copied to both serving
   hosts (the snapshot file, its ledger, the ``current`` link): the bootstrap.
3. Day ``--start``: the refresh host's refresh, then both serving hosts at once (two
   processes on this machine's two cores); day ``--start`` + 1: the refresh host, then
   each serving host alone (what a host on its own machine takes).
4. After each day: every host names the same publication, and the three stores' rows
   are equal (a digest of every row, hashes included).

    python bench/bench_hosts_refresh.py      # ~45 min on 2 cores, ~55 making the export
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_changesets import END, FEED_DAYS  # noqa: E402
from bench_refresh import MEMORY, SECRET, full_rebuild, prepare  # noqa: E402
from measure import machine, measure  # noqa: E402

from online_store.reader import CURRENT, LEDGER  # noqa: E402
from online_store.refresh import Recomputation, RefreshTask, refresh  # noqa: E402
from synth.generate import generate  # noqa: E402

HOSTS = ("a", "b")


def _export(export: Path) -> float | None:
    """The living export of ``bench_changesets.py`` (same arguments), made if missing."""
    if (export / "manifest.json").exists():
        return None
    started = time.perf_counter()
    generate(
        export, 11_000_000, 7, END, b"bench", oracle_dates=(), progress=False, feed_days=FEED_DAYS
    )
    return round(time.perf_counter() - started, 1)


def copy_publication(source: Path, dest: Path) -> dict:
    """A serving host's bootstrap: the current snapshot, the ledger and the link."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    name = os.readlink(source / CURRENT)
    started = time.perf_counter()
    shutil.copyfile(source / name, dest / name)
    shutil.copyfile(source / LEDGER, dest / LEDGER)
    os.symlink(name, dest / CURRENT)
    return {
        "copy_s": round(time.perf_counter() - started, 1),
        "gb": round((dest / name).stat().st_size / 2**30, 2),
    }


def refresh_host_day(wh: Path, feed: Path, online: Path, day: Path, shared: Path) -> dict:
    (feed / day.name).symlink_to(day.resolve())
    how = Recomputation(share=shared)  # the day's difference: shared/YYYY-MM-DD
    with measure() as m:
        r = refresh(RefreshTask(wh, feed, online, SECRET, memory_limit=MEMORY, how=how))
    out = {
        "day": str(r.as_of),
        "kind": r.kind,
        "publication": r.publication,
        "wall_s": round(m.wall_s, 2),
        "peak_rss_gb": round(m.peak_rss_gb, 2),
        "rewritten": r.rewritten,
        "recomputed": r.recomputed,
        "seconds": r.seconds,
        "shared_mb": round(_bytes(shared / day.name) / 2**20, 2),
    }
    print(json.dumps({"refresh_host": out}), flush=True)
    return out


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _host_env(home: Path) -> dict:
    """A serving host's settings: its own home, no warehouse there, the bench's secret."""
    return {
        **os.environ,
        "CREDREF_HOME": str(home),
        "CREDREF_ID_HASH_SECRET": SECRET.decode(),
        "CREDREF_LOG_FORMAT": "json",
    }


def _watch(proc: subprocess.Popen, peak: dict) -> None:
    """Peak RSS of one host's refresh process (sampled until it exits)."""
    p = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak["rss"] = max(peak["rss"], p.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.1)


def serving_hosts_apply(homes: dict[str, Path], folder: Path, together: bool) -> dict:
    """``credref refresh --changes folder`` on each serving host (in its own process),
    all at once or one after the other; each host's wall time and peak memory."""
    cli = [str(ROOT / ".venv/bin/credref"), "refresh", "--changes", str(folder)]
    out: dict[str, dict] = {}

    def start(name: str) -> tuple[subprocess.Popen, float, dict, threading.Thread]:
        log = (homes[name] / "refresh.log").open("a")
        proc = subprocess.Popen(cli, env=_host_env(homes[name]), stdout=log, stderr=log)
        peak = {"rss": 0}
        watcher = threading.Thread(target=_watch, args=(proc, peak), daemon=True)
        watcher.start()
        return proc, time.perf_counter(), peak, watcher

    def finish(name, proc, started, peak, watcher) -> None:
        code = proc.wait()
        wall = time.perf_counter() - started
        watcher.join()
        if code != 0:
            raise SystemExit(f"host {name}: credref refresh exited {code}; see its refresh.log")
        out[name] = {"wall_s": round(wall, 2), "peak_rss_gb": round(peak["rss"] / 2**30, 2)}

    if together:
        running = {name: start(name) for name in homes}
        for name, run in running.items():
            finish(name, *run)
    else:
        for name in homes:
            finish(name, *start(name))
    print(json.dumps({"serving_hosts": out, "together": together}), flush=True)
    return out


def digest(online: Path) -> tuple[str, str, int]:
    """The current publication's name, a digest of every row (in code order), rows."""
    con = sqlite3.connect(f"file:{online / CURRENT}?mode=ro", uri=True)
    try:
        name = con.execute("SELECT value FROM meta WHERE key = 'publication'").fetchone()[0]
        h, n = hashlib.sha256(), 0
        cur = con.execute("SELECT * FROM subjects ORDER BY uscc")
        while rows := cur.fetchmany(200_000):
            h.update(repr(rows).encode())
            n += len(rows)
        return name, h.hexdigest(), n
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, default=ROOT / "bench/out/living/export")
    ap.add_argument("--home", type=Path, default=ROOT / "bench/out/hosts_refresh")
    ap.add_argument("--start", type=date.fromisoformat, default=date(2026, 9, 25))
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/hosts_refresh.json")
    args = ap.parse_args()
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    result: dict = {"benchmark": "hosts_refresh", "machine": machine(), "date": time.strftime("%F")}
    result["generate_s"] = _export(args.export)
    started = time.perf_counter()
    wh, days = prepare(args.export, home, args.start)
    result["warehouse_s"] = round(time.perf_counter() - started, 1)
    online, feed, shared = home / "refresh" / "online", home / "feed", home / "shared"
    for path in (online, feed, shared):
        shutil.rmtree(path, ignore_errors=True)
    feed.mkdir()
    result["full_rebuild"] = full_rebuild(wh, online, args.start - timedelta(days=1))
    homes = {name: home / name for name in HOSTS}
    result["bootstrap"] = {n: copy_publication(online, h / "online") for n, h in homes.items()}
    result["days"] = []
    for together, day in zip((True, False), days[:2], strict=True):
        made = refresh_host_day(wh, feed, online, day, shared)
        hosts = serving_hosts_apply(homes, shared, together)  # as their timers: every day due
        t = time.perf_counter()
        stores = {"refresh": digest(online), **{n: digest(h / "online") for n, h in homes.items()}}
        same = len({v for v in stores.values()}) == 1
        result["days"].append(
            {
                "refresh_host": made,
                "serving_hosts": hosts,
                "together": together,
                "same_publication_and_rows": same,
                "rows": stores["refresh"][2],
                "digest_s": round(time.perf_counter() - t, 1),
            }
        )
        print(json.dumps({"day": made["day"], "same_publication_and_rows": same}), flush=True)
        if not same:
            raise SystemExit(f"the hosts differ after {made['day']}: {stores}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
