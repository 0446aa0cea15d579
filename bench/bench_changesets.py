"""Benchmark: the living warehouse on the 11M pilot.

1. Generates the pilot (11M households, seed 7) as known 92 days before its end, with
   one change set per day after (``credref generate --feed-days 92``).
2. First load of that export: wall time and peak memory (target <= 180 s).
3. Applies the 92 daily change sets in order: per day the rows and the time
   (target for a typical day <= 10 s); warehouse size after the base, after 90 days.
4. Change sets of 10k, 100k and 1M rows (new households, corrected annual reports and
   penalties, deletions), to show the cost follows the change set, not the warehouse.
5. A snapshot as known at K against today's snapshot, same warehouse, same run
   (target: within 1.2x).

    python bench/bench_changesets.py            # ~25 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine, measure

from features.dataset import build_snapshot
from records.changeset import write_changeset
from records.ingest import ingest
from records.schema import TABLES_BY_NAME, arrow_schema
from synth.generate import generate
from synth.population import usccs

END = date(2026, 9, 30)
FEED_DAYS = 92
MEMORY = "8GB"


def _size_gb(path: Path) -> float:
    return round(path.stat().st_size / 2**30, 2)


def _apply(path: Path, wh: Path) -> dict:
    with measure() as m:
        reports = ingest(path, wh, progress=False, memory_limit=MEMORY)
    return {
        "day": path.name,
        "wall_s": round(m.wall_s, 2),
        "peak_rss_gb": round(m.peak_rss_gb, 2),
        "rows": sum(r.read for r in reports),
        "inserted": sum(r.inserted for r in reports),
        "replaced": sum(r.replaced for r in reports),
        "deleted": sum(r.deleted for r in reports),
        "by_table": {r.file: r.read for r in reports},
    }


def _synthetic(wh: Path, n: int, day: date, folder: Path, first_index: int) -> Path:
    """A change set of ``n`` rows: 10% new households, 50% corrected annual reports, 35%
    corrected penalties (fine), 5% deleted penalties."""
    con = duckdb.connect(str(wh), read_only=True)
    sample = con.execute(
        f"SELECT * EXCLUDE (known_from) FROM households USING SAMPLE reservoir({n // 10} ROWS) "
        "REPEATABLE (1)"
    ).to_arrow_table()
    reports = con.execute(
        "SELECT * EXCLUDE (known_from) FROM annual_reports WHERE filed_on IS NOT NULL "
        f"USING SAMPLE reservoir({n // 2} ROWS) REPEATABLE (2)"
    ).to_arrow_table()
    pens = con.execute(
        "SELECT * EXCLUDE (known_from) FROM penalties "
        f"USING SAMPLE reservoir({n * 35 // 100 + n // 20} ROWS) REPEATABLE (3)"
    ).to_arrow_table()
    con.close()
    division = np.array(sample.column("division_code").to_pylist(), dtype=object)
    codes = usccs(np.arange(first_index, first_index + sample.num_rows), division)
    new_hh = sample.set_column(0, "uscc", pa.array(codes, pa.string()))
    new_hh = new_hh.set_column(
        new_hh.schema.get_field_index("registered_on"),
        "registered_on",
        pa.array([day] * sample.num_rows, pa.date32()),
    )
    for col, value in (
        ("status", "operating"),
        ("status_changed_on", None),
        ("status_reason", None),
    ):
        i = new_hh.schema.get_field_index(col)
        new_hh = new_hh.set_column(
            i, col, pa.array([value] * sample.num_rows, new_hh.schema.field(i).type)
        )
    emp = np.nan_to_num(np.array(reports.column("employees").to_pylist(), dtype=float)) + 1
    reports = reports.set_column(
        reports.schema.get_field_index("employees"), "employees", pa.array(emp.astype(np.int32))
    )
    n_fix = n * 35 // 100
    fines = np.nan_to_num(np.array(pens.column("fine_yuan").to_pylist(), dtype=float)) + 1
    fixed = pens.slice(0, n_fix)
    fixed = fixed.set_column(
        fixed.schema.get_field_index("fine_yuan"), "fine_yuan", pa.array(fines[:n_fix])
    )
    deleted = pens.slice(n_fix).select(["decision_no"])
    rows = {
        "households": new_hh.cast(arrow_schema(TABLES_BY_NAME["households"])),
        "annual_reports": reports.cast(arrow_schema(TABLES_BY_NAME["annual_reports"])),
        "penalties": fixed.cast(arrow_schema(TABLES_BY_NAME["penalties"])),
    }
    return write_changeset(folder / day.isoformat(), day, rows, {"penalties": deleted})


def _snapshot_s(wh: Path, out: Path, as_of: date, known_at: date | None, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        con = duckdb.connect(str(wh), read_only=True, config={"memory_limit": MEMORY})
        t = time.perf_counter()
        build_snapshot(con, as_of, out, known_at=known_at)
        best = min(best, time.perf_counter() - t)
        con.close()
    return round(best, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, default=Path("bench/out/living"))
    ap.add_argument("--households", type=int, default=11_000_000)
    args = ap.parse_args()
    root, export, wh = args.root, args.root / "export", args.root / "wh.duckdb"
    result: dict = {
        "benchmark": "changesets",
        "machine": machine(),
        "date": date.today().isoformat(),
    }
    if not (export / "manifest.json").exists():
        with measure() as m:
            generate(
                export,
                args.households,
                7,
                END,
                b"bench",
                oracle_dates=(),
                progress=False,
                feed_days=FEED_DAYS,
            )
        result["generate_s"] = round(m.wall_s, 1)
    for p in (wh, Path(str(wh) + ".wal")):
        p.unlink(missing_ok=True)
    with measure() as m:
        reports = ingest(export, wh, progress=False, memory_limit=MEMORY)
    result["first_load"] = {
        "rows": sum(r.read for r in reports),
        "wall_s": round(m.wall_s, 1),
        "peak_rss_gb": round(m.peak_rss_gb, 2),
        "warehouse_gb": _size_gb(wh),
    }
    print(json.dumps(result["first_load"]), flush=True)
    days = []
    for i, folder in enumerate(sorted((export / "feed").iterdir()), start=1):
        days.append(_apply(folder, wh))
        print(json.dumps({k: v for k, v in days[-1].items() if k != "by_table"}), flush=True)
        if i == 90:
            result["warehouse_gb_after_90_days"] = _size_gb(wh)
    walls = [d["wall_s"] for d in days]
    rows = [d["rows"] for d in days]
    typical = sorted(days, key=lambda d: d["rows"])[len(days) // 2]
    result["feed"] = {
        "days": len(days),
        "median_rows": statistics.median(rows),
        "median_wall_s": statistics.median(walls),
        "max_rows_day": max(days, key=lambda d: d["rows"]),
        "slowest_day": max(days, key=lambda d: d["wall_s"]),
        "typical_day": typical,
        "warehouse_gb_after": _size_gb(wh),
        "all": days,
    }
    sizes = []
    for j, n in enumerate((10_000, 100_000, 1_000_000)):
        day = END + timedelta(days=1 + j)
        cs = _synthetic(wh, n, day, root / "synthetic", 20_000_000 + j * 1_000_000)
        sizes.append({"size": n, **_apply(cs, wh)})
        print(json.dumps({k: v for k, v in sizes[-1].items() if k != "by_table"}), flush=True)
    result["synthetic"] = sizes
    snap = root / "snapshot.parquet"
    k = END - timedelta(days=30)  # inside the feed: history holds what changed since
    now = _snapshot_s(wh, snap, k, None)
    then = _snapshot_s(wh, snap, k, k)
    result["snapshot"] = {
        "as_of": k.isoformat(),
        "known_now_s": now,
        "known_at_as_of_s": then,
        "ratio": round(then / now, 3),
    }
    result["warehouse_gb_final"] = _size_gb(wh)
    print(json.dumps({k: v for k, v in result.items() if k != "feed"}, indent=2))
    (root / "result.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
