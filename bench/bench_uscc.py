"""Benchmark: the USCC check of a first load, scalar (stdnum per code, as before) against
vectorised (records.codes.uscc_problems), on the same codes in the same run, and equal.

    python bench/bench_uscc.py --export bench/out/pilot
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine

from records.codes import uscc_problem, uscc_problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, default=Path("bench/out/pilot"))
    args = ap.parse_args()
    codes = pq.read_table(args.export / "households.parquet", columns=["uscc"])["uscc"]
    codes = codes.combine_chunks()
    started = time.perf_counter()
    fast = uscc_problems(codes).to_pylist()
    vectorised_s = time.perf_counter() - started
    started = time.perf_counter()
    slow = [None if c is None else uscc_problem(c) for c in codes.to_pylist()]
    scalar_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "codes": len(codes),
                "scalar_s": round(scalar_s, 1),
                "vectorised_s": round(vectorised_s, 2),
                "speed_up": round(scalar_s / vectorised_s, 1),
                "equal": fast == slow,
                "machine": machine(),
                "date": time.strftime("%Y-%m-%d"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
