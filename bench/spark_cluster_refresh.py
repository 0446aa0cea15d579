"""The refresh's recomputation through ``spark-submit`` on a real Spark standalone cluster.

Starts a master and two workers on this machine from the PySpark package
(``spark-class org.apache.spark.deploy.master.Master`` / ``...worker.Worker``), then runs
the README's recipe on a generated living domain:

1. ``credref refresh`` publishes the day before the feed; ``credref ingest`` takes the
   first change set;
2. ``credref refresh-plan --tables T`` names the current publication and exports the
   record tables and their history;
3. ``spark-submit --master spark://127.0.0.1:7077 online_store/spark_refresh.py`` computes the
   day's changed households on the cluster;
4. ``credref refresh --changes`` applies them; a copy of the store refreshed by DuckDB
   must hold the same rows.

    python bench/spark_cluster_refresh.py        # ~5 min on 2 cores
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench/out/spark_cluster"
MASTER, UI = "spark://127.0.0.1:7077", "http://127.0.0.1:18080/json/"
SECRET = "bench-secret"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def start_cluster(log: Path) -> list[subprocess.Popen]:
    cls = str(spark_home() / "bin/spark-class")
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "PYSPARK_PYTHON": sys.executable}
    master = [cls, "org.apache.spark.deploy.master.Master"]
    master += ["--host", "127.0.0.1", "--port", "7077", "--webui-port", "18080"]
    procs = [subprocess.Popen(master, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT)]
    for i in (1, 2):
        worker = [cls, "org.apache.spark.deploy.worker.Worker", "--cores", "1", "--memory", "2g"]
        worker += ["--webui-port", str(18080 + i), "--work-dir", str(OUT / f"work{i}"), MASTER]
        procs.append(
            subprocess.Popen(worker, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT)
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # a state to wait on: two workers ALIVE at the master
        try:
            alive = [w for w in httpx.get(UI, timeout=2).json()["workers"] if w["state"] == "ALIVE"]
            if len(alive) == 2:
                return procs
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit("the cluster did not come up; see " + str(log))


def credref(env: dict, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "credref.cli", *args], env=env, capture_output=True, text=True
    )
    if r.returncode:
        raise SystemExit(f"credref {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def rows(online: Path) -> list[tuple]:
    con = sqlite3.connect(online / os.readlink(online / "current"))
    try:
        return con.execute("SELECT * FROM subjects ORDER BY uscc").fetchall()
    finally:
        con.close()


def main() -> None:
    from records.changeset import read_changeset
    from tests.conftest import living_export

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    domain = living_export(OUT / "domain", history=True, feed_days=3)
    days = sorted((domain / "feed").iterdir())
    home = OUT / "home"
    env = {
        **os.environ,
        "CREDREF_HOME": str(home),
        "CREDREF_WAREHOUSE": str(home / "warehouse.duckdb"),
        "CREDREF_ID_HASH_SECRET": SECRET,
        "PYSPARK_PYTHON": sys.executable,
    }
    credref(env, "ingest", str(domain))
    before = read_changeset(days[0]).day - timedelta(days=1)
    credref(env, "refresh", "--as-of", before.isoformat())
    credref(env, "ingest", str(days[0]))
    shutil.copytree(home / "online", OUT / "online-duckdb", symlinks=True)
    plan = OUT / "plan.json"
    plan.write_text(credref(env, "refresh-plan", "--tables", str(OUT / "tables")))
    code = OUT / "credref.zip"
    with zipfile.ZipFile(code, "w") as z:
        # what the driver and executors import (online_store.spark_refresh's closure)
        for pkg in ("settings", "records", "features", "scoring", "online_store", "credref"):
            for f in (ROOT / pkg).rglob("*.py"):
                z.write(f, f.relative_to(ROOT))
    log = OUT / "cluster.log"
    cluster = start_cluster(log)
    try:
        t = time.perf_counter()
        submit = [str(spark_home() / "bin/spark-submit"), "--master", MASTER]
        submit += ["--py-files", str(code), "--conf", "spark.sql.session.timeZone=UTC"]
        submit += ["--conf", "spark.executor.memory=1g", "--conf", "spark.cores.max=2"]
        submit += [str(ROOT / "online_store/spark_refresh.py"), "--tables", str(OUT / "tables")]
        submit += ["--plan", str(plan), "--as-of", read_changeset(days[0]).day.isoformat()]
        submit += ["--out", str(OUT / "changes")]
        r = subprocess.run(
            submit,
            env={**env, "SPARK_HOME": str(spark_home())},
            capture_output=True,
            text=True,
        )
        submit_s = time.perf_counter() - t
        if r.returncode:
            raise SystemExit(f"spark-submit failed:\n{r.stderr[-4000:]}")
        apps = httpx.get(UI, timeout=5).json()["completedapps"]
    finally:
        for p in cluster:
            p.terminate()
        for p in cluster:
            p.wait(timeout=60)
    manifest = json.loads((OUT / "changes" / "refresh.json").read_text())
    credref(env, "refresh", "--changes", str(OUT / "changes"))
    duck_env = {**env, "CREDREF_ONLINE_DIR": str(OUT / "online-duckdb")}
    credref(duck_env, "refresh")
    same = rows(home / "online") == rows(OUT / "online-duckdb")
    result = {
        "benchmark": "spark standalone refresh",
        "date": time.strftime("%F"),
        "cluster": {"master": MASTER, "workers": 2, "cores_per_worker": 1},
        "households": len(rows(home / "online")),
        "changed_rows": manifest["rows"],
        "submit_wall_s": round(submit_s, 1),
        "application": [
            {k: a.get(k) for k in ("name", "cores", "state", "duration")} for a in apps
        ],
        "equal_to_duckdb_refresh": same,
    }
    (ROOT / "bench/out/spark_cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not same:
        raise SystemExit("the cluster's refresh differs from DuckDB's")


if __name__ == "__main__":
    main()
