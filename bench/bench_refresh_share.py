"""Benchmark: the heaviest day's refresh of the 11M pilot alone, then again, from the
same starting state, while a real server answers ``/v1/score`` at 500 requests/s on the
same 2 cores. It measures how much of the refresh's time under load is the load's share
of the machine.

Uses the living export of ``bench_changesets.py`` (bench/out/living/export) and the
functions of ``bench_refresh.py``:

1. A warehouse with every change set before 2026-09-30, and a full publication of
   2026-09-29.
2. The refresh of 2026-09-30 alone (the change set applied, the store rewritten in place).
3. The warehouse, the store and the feed put back as they were before step 2, then the
   same refresh recomputing every row (as before candidates, and as on 30 June), and,
   put back again, the same refresh with the server under load.

    python bench/bench_refresh_share.py          # ~20 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_refresh import full_rebuild, one_day, prepare, under_load  # noqa: E402
from measure import machine  # noqa: E402

DAY = date(2026, 9, 30)


def _keep(home: Path) -> Path:
    """A copy of the warehouse, the online store and the feed folder."""
    saved = home / "saved"
    shutil.rmtree(saved, ignore_errors=True)
    saved.mkdir()
    shutil.copy2(home / "wh.duckdb", saved / "wh.duckdb")
    shutil.copytree(home / "online", saved / "online", symlinks=True)
    shutil.copytree(home / "feed", saved / "feed", symlinks=True)
    return saved


def _restore(home: Path, saved: Path) -> None:
    for name in ("online", "feed"):
        shutil.rmtree(home / name)
        shutil.copytree(saved / name, home / name, symlinks=True)
    shutil.copy2(saved / "wh.duckdb", home / "wh.duckdb")
    for leftover in home.glob("wh.duckdb.wal"):
        leftover.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, default=ROOT / "bench/out/living/export")
    ap.add_argument("--home", type=Path, default=ROOT / "bench/out/refresh_share")
    ap.add_argument("--model-home", type=Path, default=ROOT / "var/demo")
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/refresh_share.json")
    args = ap.parse_args()
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    wh, days = prepare(args.export, home, DAY)
    (day,) = [d for d in days if d.name == DAY.isoformat()]
    result: dict = {"benchmark": "refresh_share", "machine": machine(), "date": time.strftime("%F")}
    if not (home / "online" / "current").exists():
        result["full_rebuild"] = full_rebuild(wh, home / "online", DAY - timedelta(days=1))
    (home / "feed").mkdir(exist_ok=True)
    saved = _keep(home)
    result["alone"] = one_day(wh, home / "feed", home / "online", day)
    _restore(home, saved)
    result["every_row_alone"] = _every_row(wh, home, day)
    _restore(home, saved)
    result["under_load"] = under_load(home, args.model_home, wh, home / "feed", day, args.rate)
    alone, loaded = result["alone"]["wall_s"], result["under_load"]["refresh"]["wall_s"]
    result["slowdown"] = round(loaded / alone, 2)
    every = result["every_row_alone"]["wall_s"]
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"alone_s": alone, "every_row_s": every, "under_load_s": loaded}))


def _every_row(wh: Path, home: Path, day: Path) -> dict:
    """The same refresh as before candidates: every row recomputed and compared (the
    path a 30 June or 1 January takes), from the same state, as this run's baseline."""
    import online_store.incremental as incremental

    picks = incremental.candidates
    incremental.candidates = lambda *_: None
    try:
        return one_day(wh, home / "feed", home / "online", day)
    finally:
        incremental.candidates = picks


if __name__ == "__main__":
    main()
