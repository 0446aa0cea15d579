"""Benchmark: generate the pilot domain (target: 11M households, <= 15 min, <= 16 GB).

python bench/bench_generate.py --households 11000000
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine, measure

from synth.generate import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--households", type=int, default=11_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("bench/out/pilot"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--oracle-dates",
        default="2024-06-30,2025-06-30",
        help="comma-separated month ends for the truth file",
    )
    args = ap.parse_args()
    dates = tuple(date.fromisoformat(d) for d in args.oracle_dates.split(",") if d)
    with measure() as m:
        counts = generate(
            args.out,
            args.households,
            args.seed,
            date(2026, 9, 30),
            b"bench-secret",
            oracle_dates=dates,
            workers=args.workers,
            progress=True,
        )
    size = sum(p.stat().st_size for p in args.out.rglob("*.parquet")) / 2**30
    result = {
        "benchmark": "generate",
        "households": args.households,
        "oracle_dates": args.oracle_dates,
        "wall_s": round(m.wall_s, 1),
        "peak_rss_gb": round(m.peak_rss_gb, 2),
        "output_gb": round(size, 2),
        "rows": counts,
        "machine": machine(),
        "date": date.today().isoformat(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
