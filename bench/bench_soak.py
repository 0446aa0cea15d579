"""Soak: 10 minutes at 300 requests/s on the full-pilot snapshot, open loop.

Targets: zero errors; memory growth of the service (summed RSS of its process tree, end of
the soak against the start after a warm-up) under 10%; audit rows written during the soak
equal to the requests answered, exactly.

Runs on the home bench_serve.py made (the 11M snapshot already published there).

    python bench/bench_soak.py --home bench/out/serve --model-home var/demo
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import _audit_rows, service_env
from loadgen import run
from measure import machine, tree_rss

from serving import launch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path("bench/out/serve"))
    ap.add_argument("--model-home", type=Path, default=Path("var/demo"))
    ap.add_argument("--rate", type=float, default=300)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--out", type=Path, default=Path("bench/out/soak.json"))
    args = ap.parse_args()
    home = args.home.resolve()
    env = service_env(home, args.model_home, 3303)
    os.environ.update(env)
    from serving.keys import KeyStore

    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    operating = [r[0] for r in snap.execute("SELECT uscc FROM subjects WHERE status = 'operating'")]
    bodies = [
        {"uscc": u, "purpose": "periodic_review"}
        for u in random.Random(1).sample(operating, 50_000)
    ]
    del operating
    key = KeyStore(home / "keys.sqlite").create("soak", ["score"])[1]
    headers = {"Authorization": f"Bearer {key}"}
    url = "http://127.0.0.1:3303"
    samples: list[tuple[float, float]] = []
    log = home / "soak-service.log"
    proc = launch.start(env, log, workers=2)
    try:
        launch.wait_ready(f"{url}/readyz", proc, log, timeout=300)
        run(url, "/v1/score", bodies, headers, args.rate, 30)  # warm-up: caches, pools
        server = psutil.Process(proc.pid)
        stop_sampling = threading.Event()

        def sample() -> None:
            t0 = time.monotonic()
            while not stop_sampling.is_set():
                samples.append((time.monotonic() - t0, tree_rss(server) / 2**20))
                stop_sampling.wait(5)

        sampler = threading.Thread(target=sample, daemon=True)
        before = _audit_rows(home)
        sampler.start()
        result = run(url, "/v1/score", bodies, headers, args.rate, args.minutes * 60)
        stop_sampling.set()
        sampler.join()
        time.sleep(1)
        written = _audit_rows(home) - before
    finally:
        launch.stop(proc)
    s = result.summary()
    start_mb = samples[0][1]
    end_mb = samples[-1][1]
    out = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "load": s,
        "rss_start_mb": round(start_mb, 1),
        "rss_end_mb": round(end_mb, 1),
        "rss_max_mb": round(max(m for _, m in samples), 1),
        "rss_growth": round(end_mb / start_mb - 1, 4),
        "audit_rows_written": written,
        "answered": s["ok"] + sum(v for k, v in s["error_kinds"].items() if k.isdigit()),
        "rss_samples_mb": [(round(t), round(m, 1)) for t, m in samples],
    }
    out["audit_equals_answered"] = out["audit_rows_written"] == out["answered"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "rss_samples_mb"}, indent=2))


if __name__ == "__main__":
    main()
