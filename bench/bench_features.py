"""Benchmark: one as-of feature snapshot for the full pilot on DuckDB.

Target: <= 5 minutes, <= 12 GB, and within 5x the time of one full scan of the same
input, measured in the same run. Two scans are timed, as "full scan" reads two ways:
``scan`` reads every column the feature SQL reads (found by parsing that SQL), from every
record table (the stricter one, and the headline); ``scan_all_columns`` reads every column
of every record table.

    python bench/bench_features.py --export bench/out/pilot --warehouse bench/out/pilot.duckdb
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine, measure

from features.dataset import build_snapshot
from features.pit import feature_sql
from records.ingest import ingest
from records.schema import TABLES


def scan_sql(as_of: date, all_columns: bool = False) -> str:
    used = {
        c.name for c in sqlglot.parse_one(feature_sql(as_of), read="duckdb").find_all(exp.Column)
    }
    parts = []
    for t in TABLES:
        cols = [c for c in t.column_names if all_columns or c in used]
        parts.append(f'SELECT count(*) AS n, sum(hash({", ".join(cols)})) AS h FROM "{t.name}"')
    return " UNION ALL ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--export", type=Path, default=Path("bench/out/pilot"))
    ap.add_argument("--warehouse", type=Path, default=Path("bench/out/pilot.duckdb"))
    ap.add_argument("--as-of", default="2025-06-30")
    ap.add_argument("--out", type=Path, default=Path("bench/out/snapshot.parquet"))
    ap.add_argument("--memory-limit", default="10GB", help="DuckDB memory cap")
    args = ap.parse_args()
    as_of = date.fromisoformat(args.as_of)
    result: dict = {
        "benchmark": "features",
        "as_of": args.as_of,
        "machine": machine(),
        "date": date.today().isoformat(),
    }
    if not args.warehouse.exists():
        with measure() as m:
            reports = ingest(
                args.export, args.warehouse, progress=False, memory_limit=args.memory_limit
            )
        result["ingest"] = {
            "wall_s": round(m.wall_s, 1),
            "peak_rss_gb": round(m.peak_rss_gb, 2),
            "rows": sum(r.read for r in reports),
        }
    con = duckdb.connect(
        str(args.warehouse), read_only=True, config={"memory_limit": args.memory_limit}
    )
    for key, all_columns in (("scan", False), ("scan_all_columns", True)):
        scans = []
        for _ in range(3):  # the scan is short and noisy: take the median of three
            with measure() as m:
                rows = con.execute(scan_sql(as_of, all_columns)).fetchall()
            scans.append(m)
        median = sorted(scans, key=lambda x: x.wall_s)[1]
        result[key] = {
            "wall_s": round(median.wall_s, 2),
            "runs_s": [round(x.wall_s, 2) for x in scans],
            "peak_rss_gb": round(max(x.peak_rss_gb for x in scans), 2),
            "rows": sum(r[0] for r in rows),
        }
    with measure() as m:
        manifest = build_snapshot(con, as_of, args.out)
    result["features"] = {
        "wall_s": round(m.wall_s, 1),
        "peak_rss_gb": round(m.peak_rss_gb, 2),
        "households": manifest["rows"],
    }
    for key in ("scan", "scan_all_columns"):
        result[f"features_over_{key}"] = round(
            result["features"]["wall_s"] / max(result[key]["wall_s"], 1e-9), 2
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
