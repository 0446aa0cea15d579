"""The long schema-fuzzing run: tests/test_fuzz.py with many more examples per operation.

python bench/fuzz.py [--examples 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fuzz.json")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CREDREF_FUZZ_EXAMPLES": str(args.examples),
        "CREDREF_FUZZ_REPORT": str(args.out.resolve()),
    }
    start = time.perf_counter()
    rc = subprocess.call(
        [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
    )
    print(
        f"{args.examples} examples per operation and mode: exit {rc}, "
        f"{time.perf_counter() - start:.0f} s; audited: "
        f"{args.out.read_text() if args.out.exists() else '(no report)'}"
    )
    sys.exit(rc)
