"""Benchmark: ``POST /v1/score`` under open-loop load, after publishing the full pilot.

1. ``publish`` the 11M-household snapshot from the pilot warehouse into a bench home
   (wall time and peak memory recorded);
2. start the real service (``credref serve``, BentoML, 2 workers, keys and audit on) and
   offer fixed rates with bench/loadgen.py (open loop, latency from the due time), the
   load generator on the same 2-core machine;
3. the same rates against a bare Starlette/uvicorn app (bench/baseline_app.py, 2 workers)
   that calls the same scoring function, as the framework baseline;
4. the same rates against BentoML alone (bench/bentoml_floor.py: same service
   configuration, body validation and a fixed reply): the framework's own cost.

A rate is *held* when every request succeeded and p99 stayed under one second: with the
schedule fixed, a server that cannot keep up builds a queue that grows for the whole run,
and p99 climbs to seconds.
Targets: p99 <= 50 ms at 500 requests/s with zero errors; >= 1,000 requests/s held.

    python bench/bench_serve.py --warehouse bench/out/pilot.duckdb --model-home var/demo
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import run
from measure import machine, measure

from serving import launch

ROOT = Path(__file__).resolve().parent.parent


def publish_snapshot(warehouse: Path, home: Path, secret: bytes, memory_limit: str = "8GB") -> dict:
    from features.dataset import observed_through
    from online_store.publish import publish
    from records.warehouse import connect

    con = connect(warehouse, read_only=True, memory_limit=memory_limit)
    try:
        as_of = observed_through(con)
        with measure() as m:
            meta = publish(con, as_of, home / "online", secret, progress=False)
    finally:
        con.close()
    return {**meta, "wall_s": round(m.wall_s, 1), "peak_rss_gb": round(m.peak_rss_gb, 2)}


def service_env(home: Path, model_home: Path, port: int) -> dict[str, str]:
    """Environment for a benchmarked ``credref serve``: its home, the champion's MLflow
    store, no practical rate limit (the generator is one platform), a fixed port, and the
    domain's clock on the publication's day (a generated domain has its own calendar)."""
    from online_store.reader import describe_current

    return {
        **os.environ,
        "CREDREF_TODAY": os.environ.get("CREDREF_TODAY")
        or describe_current(home / "online")["as_of"],
        "CREDREF_HOME": str(home),
        "CREDREF_MLFLOW_TRACKING_URI": f"sqlite:///{(model_home / 'mlflow.db').resolve()}",
        "CREDREF_RATE_LIMIT": "1000000",
        "CREDREF_PORT": str(port),
        "BENTOML_HOME": str(home / "bentoml"),
    }


def held(s: dict) -> bool:
    return s["errors"] == 0 and s["p99_ms"] < 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its children so far."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def sweep(
    url: str,
    headers: dict,
    bodies: list[dict],
    rates: list[int],
    seconds: float,
    pid: int,
    path: str = "/v1/score",
) -> list:
    out = []
    run(url, path, bodies, headers, 100, 5)  # warm-up
    for rate in rates:
        cpu0 = cpu_seconds(pid)
        s = run(url, path, bodies, headers, rate, seconds).summary()
        s["server_cpu_ms_per_request"] = round(1000 * (cpu_seconds(pid) - cpu0) / s["sent"], 3)
        s["held"] = held(s)
        print(json.dumps(s), flush=True)
        out.append(s)
        time.sleep(3)  # let queues drain between steps
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", type=Path, default=Path("bench/out/pilot.duckdb"))
    ap.add_argument("--model-home", type=Path, default=Path("var/demo"))
    ap.add_argument("--home", type=Path, default=Path("bench/out/serve"))
    ap.add_argument("--rates", default="250,500,750,1000,1250")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--reuse-snapshot", action="store_true")
    ap.add_argument("--memory-limit", default="8GB", help="DuckDB's cap for the publication")
    ap.add_argument("--out", type=Path, default=Path("bench/out/serve.json"))
    ap.add_argument(
        "--service-only", action="store_true", help="skip the baseline and floor (iterating)"
    )
    ap.add_argument(
        "--verify",
        action="store_true",
        help="also offer the rates to /v1/verify (correct claims, guessing limits on)",
    )
    args = ap.parse_args()

    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    secret = b"credref-development-secret-not-for-production"
    env = service_env(home, args.model_home, 3301)
    result: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    if args.reuse_snapshot and (home / "online" / "current").exists():
        from online_store.reader import describe_current

        result["publish"] = {**describe_current(home / "online"), "reused": True}
    else:
        result["publish"] = publish_snapshot(
            args.warehouse.resolve(), home, secret, args.memory_limit
        )
    print("publish:", json.dumps(result["publish"]), flush=True)

    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    operating = [r[0] for r in snap.execute("SELECT uscc FROM subjects WHERE status = 'operating'")]
    random.Random(0).shuffle(operating)
    bodies = [{"uscc": u, "purpose": "onboarding"} for u in operating[:50_000]]
    rates = [int(r) for r in args.rates.split(",")]

    os.environ.update(env)
    from serving.keys import KeyStore

    # One platform's key; its daily household budget is raised because the run asks about
    # more distinct households than a real key would (the limits are still checked and
    # written on every verification).
    secret_key = KeyStore(home / "keys.sqlite").create(
        "bench", ["score", "verify"], daily_households=10**8
    )[1]
    headers = {"Authorization": f"Bearer {secret_key}"}
    claims = verify_bodies(args.warehouse.resolve(), operating[:50_000]) if args.verify else []
    # the households scored are the platform's merchants (an operator match each), so
    # every answer pays for the relation check (serving.relation) and none is refused
    from serving.limits import VerifyLimits

    VerifyLimits(home / "limits.sqlite").remember_matches("bench", operating[:50_000])

    log = home / "service.log"
    proc = launch.start(env, log, workers=2)
    try:
        launch.wait_ready("http://127.0.0.1:3301/readyz", proc, log, timeout=300)
        audit_before = _audit_rows(home)
        result["service"] = sweep(
            "http://127.0.0.1:3301", headers, bodies, rates, args.seconds, proc.pid
        )
        if claims:
            result["service_verify"] = sweep(
                "http://127.0.0.1:3301",
                headers,
                claims,
                rates,
                args.seconds,
                proc.pid,
                "/v1/verify",
            )
        result["audit_rows_written"] = _audit_rows(home) - audit_before
        runs = result["service"] + result.get("service_verify", [])
        warm_ups = 500 * (1 + bool(claims))
        result["requests_sent"] = warm_ups + sum(s["sent"] for s in runs)
    finally:
        launch.stop(proc)

    if args.service_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("audit_rows_written", "requests_sent")}))
        return

    def reference(name: str, argv: list[str], port: int, ready: str) -> None:
        """Start one comparison server, offer it the same rates, stop it."""
        log = home / f"{name}.log"
        proc = launch.start({**env, "PYTHONPATH": str(ROOT)}, log, argv=argv)
        try:
            launch.wait_ready(f"http://127.0.0.1:{port}{ready}", proc, log, 300)
            result[name] = sweep(
                f"http://127.0.0.1:{port}", {}, bodies, rates, args.seconds, proc.pid
            )
        finally:
            launch.stop(proc)

    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "baseline_app:app",
        "--app-dir",
        str(ROOT / "bench"),
    ]
    uvicorn += ["--workers", "2", "--port", "3302", "--log-level", "warning", "--no-access-log"]
    reference("baseline", uvicorn, 3302, "/v1/score")
    bento = [sys.executable, "-m", "bentoml", "serve", "bentoml_floor:Floor"]
    bento += ["--working-dir", str(ROOT / "bench"), "--port", "3303"]
    reference("bentoml_floor", bento, 3303, "/readyz")

    for name in ("service", "baseline", "bentoml_floor"):
        ok = [s["offered_rps"] for s in result[name] if s["held"]]
        result[f"{name}_max_rate_held"] = max(ok, default=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: v
                for k, v in result.items()
                if "max_rate" in k or k in ("audit_rows_written", "requests_sent")
            }
        )
    )


def verify_bodies(warehouse: Path, codes: list[str]) -> list[dict]:
    """Verification requests with the registered operator name and address: what an
    applicant onboarding for real would claim."""
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = con.execute(
            "SELECT uscc, operator_name, address FROM households WHERE list_contains(?, uscc)",
            [codes],
        ).fetchall()
    finally:
        con.close()
    return [{"uscc": u, "operator_name": o, "address": a} for u, o, a in rows]


def _audit_rows(home: Path) -> int:
    path = home / "audit.sqlite"
    if not path.exists():
        return 0
    return sqlite3.connect(path).execute("SELECT count(*) FROM audit").fetchone()[0]


if __name__ == "__main__":
    main()
