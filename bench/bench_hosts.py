"""Benchmark: the service's state on PostgreSQL against SQLite, and two hosts on one database.

In one run, on the demo's publication and model (``make demo`` first):

1. one host (``credref serve``, 2 workers) with the embedded SQLite stores: the baseline;
2. the same host with its state on PostgreSQL (a local server with fsync on, started by
   deploy/test-postgres.sh): keys read per request, the audit chain's group commit and
   the relation checks go to the database;
3. two hosts (2 workers each, their own copy of the publication, their own port) on that
   database, the load split evenly between them by two generator processes.

Open-loop load (bench/loadgen.py) on ``POST /v1/score``; every household asked is one the
platform has a relation with. After the run, the database's audit chain is verified and
its rows counted against the requests sent.
Targets (issue 28): p99 <= 50 ms at 500 requests/s on PostgreSQL; 1,000 requests/s held
across two hosts on this machine.

    python bench/bench_hosts.py --model-home var/demo --out bench/out/hosts.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import held
from loadgen import Result, run
from measure import machine

from serving import launch

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "deploy" / "test-postgres.sh"
PLATFORM = "bench"


def host_home(model_home: Path, home: Path) -> Path:
    """A host's home: its own copy of the publication (the model comes from MLflow)."""
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    shutil.copytree(model_home / "online", home / "online", symlinks=True)
    return home


def host_env(home: Path, model_home: Path, port: int, database: str | None) -> dict[str, str]:
    from online_store.reader import describe_current

    env = {
        "CREDREF_HOME": str(home),
        "CREDREF_TODAY": describe_current(home / "online")["as_of"],
        "CREDREF_MLFLOW_TRACKING_URI": f"sqlite:///{(model_home / 'mlflow.db').resolve()}",
        "CREDREF_RATE_LIMIT": "1000000",
        "CREDREF_PORT": str(port),
        "BENTOML_HOME": str(home / "bentoml"),
    }
    if database:
        env["CREDREF_DATABASE_URL"] = database
    return env


def prepare_state(where, operating: list[str]) -> str:
    """A key and the platform's relations in one place (a SQLite file's folder or the
    database); returns the key's secret."""
    from serving.keys import KeyStore
    from serving.limits import VerifyLimits

    keys = KeyStore(where("keys"))
    secret = keys.create(PLATFORM, ["score"], daily_households=10**8)[1]
    keys.set_platform(PLATFORM, daily_households=10**8)
    VerifyLimits(where("limits")).remember_matches(PLATFORM, operating)
    return secret


def _one(args: tuple) -> Result:
    url, bodies, headers, rate, seconds = args
    return run(url, "/v1/score", bodies, headers, rate, seconds)


def spread(urls: list[str], bodies, headers, rate: float, seconds: float) -> dict:
    """Offer ``rate`` over the hosts, one generator process per host (an even split, as a
    round-robin balancer gives); the latencies of all requests together."""
    share = [
        (u, bodies[i :: len(urls)], headers, rate / len(urls), seconds) for i, u in enumerate(urls)
    ]
    with multiprocessing.get_context("spawn").Pool(len(urls)) as pool:
        parts = pool.map(_one, share)
    merged = Result(rate, seconds)
    for p in parts:
        merged.sent += p.sent
        merged.ok += p.ok
        for k, v in p.errors.items():
            merged.errors[k] = merged.errors.get(k, 0) + v
        merged.latencies_ms += p.latencies_ms
        merged.send_lag_ms += p.send_lag_ms
        merged.wall_s = max(merged.wall_s, p.wall_s)
    s = merged.summary()
    s["held"] = held(s)
    s["hosts"] = len(urls)
    print(json.dumps(s), flush=True)
    return s


def sweep(urls, bodies, headers, rates, seconds) -> list[dict]:
    spread(urls, bodies, headers, 100, 5)  # warm-up
    out = []
    for rate in rates:
        out.append(spread(urls, bodies, headers, rate, seconds))
        time.sleep(3)  # let queues drain between steps
    return out


def start_host(env: dict, log: Path) -> subprocess.Popen:
    proc = launch.start(env, log, workers=2)
    launch.wait_ready(f"http://127.0.0.1:{env['CREDREF_PORT']}/readyz", proc, log, 300)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-home", type=Path, default=Path("var/demo"))
    ap.add_argument("--home", type=Path, default=Path("bench/out/hosts"))
    ap.add_argument("--rates", default="250,500", help="one host, SQLite then PostgreSQL")
    ap.add_argument("--rates-two", default="500,1000", help="two hosts on PostgreSQL")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--out", type=Path, default=Path("bench/out/hosts.json"))
    args = ap.parse_args()

    from serving.audit import AuditLog
    from serving.migrations import upgrade
    from serving.state import Postgres

    model_home, root = args.model_home.resolve(), args.home.resolve()
    homes = {n: host_home(model_home, root / n) for n in ("sqlite", "a", "b")}
    snap = sqlite3.connect(f"file:{homes['a'] / 'online' / 'current'}?mode=ro", uri=True)
    operating = [r[0] for r in snap.execute("SELECT uscc FROM subjects WHERE status = 'operating'")]
    random.Random(0).shuffle(operating)
    operating = operating[:50_000]
    bodies = [{"uscc": u, "purpose": "onboarding"} for u in operating]
    rates = [int(r) for r in args.rates.split(",")]
    result: dict = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "households": len(bodies),
    }

    folder = tempfile.mkdtemp(prefix="credref-pg-bench-")
    os.chmod(folder, 0o755)
    port = launch.free_port()
    out = subprocess.run(
        [str(SERVER), "start", folder, str(port), "durable"],
        capture_output=True,
        text=True,
        check=True,
    )
    database = out.stdout.strip()
    procs: list[subprocess.Popen] = []
    try:
        upgrade(database)
        db = Postgres(database)
        pg_secret = prepare_state(lambda _: db, operating)
        sqlite_secret = prepare_state(lambda s: homes["sqlite"] / f"{s}.sqlite", operating)

        env = host_env(homes["sqlite"], model_home, launch.free_port(), None)
        proc = start_host(env, homes["sqlite"] / "service.log")
        url = f"http://127.0.0.1:{env['CREDREF_PORT']}"
        result["sqlite_one_host"] = sweep(
            [url], bodies, {"Authorization": f"Bearer {sqlite_secret}"}, rates, args.seconds
        )
        launch.stop(proc)

        headers = {"Authorization": f"Bearer {pg_secret}"}
        urls = []
        for name in ("a", "b"):
            env = host_env(homes[name], model_home, launch.free_port(), database)
            procs.append(start_host(env, homes[name] / "service.log"))
            urls.append(f"http://127.0.0.1:{env['CREDREF_PORT']}")
            if name == "a":
                result["postgres_one_host"] = sweep(urls, bodies, headers, rates, args.seconds)
        two = [int(r) for r in args.rates_two.split(",")]
        result["postgres_two_hosts"] = sweep(urls, bodies, headers, two, args.seconds)
        for p in procs:
            launch.stop(p)
        procs = []
        report = AuditLog(db).verify()
        result["audit"] = {"rows": report.rows, "chain_ok": report.ok}
        sent = sum(
            s["sent"] for k in ("postgres_one_host", "postgres_two_hosts") for s in result[k]
        )
        result["audit"]["requests_sent_to_postgres_hosts"] = sent + 500 * 2  # with warm-ups
        db.close()
    finally:
        for p in procs:
            launch.stop(p)
        subprocess.run([str(SERVER), "stop", folder], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["audit"]))


if __name__ == "__main__":
    main()
