"""Server-side CPU per request of the reference service, in process: the ASGI app driven
directly (no sockets, no HTTP parsing), CONCURRENCY requests in flight, every request
through the gate, scoring and the audit commit. A quick check while changing the hot path;
the load benchmark (bench_serve.py) is the measurement of record.

    python bench/inproc.py --home bench/out/serve --model-home var/demo --requests 8000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import service_env


async def drive(app, bodies: list[bytes], headers: list, n: int, concurrency: int) -> dict:
    from serving.gateway import replay

    async def one(body: bytes) -> int:
        # The gate reads the body once and never asks the client again.
        receive = replay(body)
        status: list[int] = []

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/score", "raw_path": b"/v1/score",
            "query_string": b"", "root_path": "", "state": {},
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 3000),
        }  # fmt: skip
        await app(scope, receive, send)
        return status[0]

    startup: asyncio.Queue = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    started: asyncio.Queue = asyncio.Queue()
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    life = asyncio.ensure_future(app(lifespan, startup.get, started.put))
    await started.get()
    for i in range(300):  # warm-up
        await one(bodies[i % len(bodies)])
    codes: dict[int, int] = {}

    async def worker(k: int) -> None:
        for i in range(k, n, concurrency):
            s = await one(bodies[i % len(bodies)])
            codes[s] = codes.get(s, 0) + 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    life.cancel()
    return {
        "requests": n,
        "concurrency": concurrency,
        "cpu_ms_per_request": round(cpu / n * 1000, 3),
        "wall_ms_per_request": round(wall / n * 1000, 3),
        "status_codes": codes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path("bench/out/serve"))
    ap.add_argument("--model-home", type=Path, default=Path("var/demo"))
    ap.add_argument("--requests", type=int, default=8000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    home = args.home.resolve()
    os.environ.update(service_env(home, args.model_home, 3301))
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    codes = [
        r[0]
        for r in snap.execute("SELECT uscc FROM subjects WHERE status = 'operating' LIMIT 200000")
    ]
    random.Random(0).shuffle(codes)
    bodies = [json.dumps({"uscc": u, "purpose": "onboarding"}).encode() for u in codes[:50_000]]

    from serving.keys import KeyStore
    from serving.service import ReferenceService

    key = KeyStore(home / "keys.sqlite").create("inproc", ["score"])[1]
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode())]
    app = ReferenceService.to_asgi()  # type: ignore[attr-defined]
    result = asyncio.run(drive(app, bodies, headers, args.requests, args.concurrency))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
