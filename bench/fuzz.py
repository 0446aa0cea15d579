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
    args = ap.parse_args()
    env = {**os.environ, "CREDREF_FUZZ_EXAMPLES": str(args.examples)}
    start = time.perf_counter()
    rc = subprocess.call(
        [sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
    )
    print(
        f"{args.examples} examples per operation and mode: exit {rc}, "
        f"{time.perf_counter() - start:.0f} s"
    )
    sys.exit(rc)
