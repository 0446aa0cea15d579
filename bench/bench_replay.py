"""Benchmark: answers replayed exactly across 30 refresh days and two model versions.

On a generated living domain (4,000 households, history, a 30-day feed): two models are
trained and registered (version 1, then version 2, a different booster); the store is
refreshed every day of the feed, and each day the service (in process, the real ASGI app)
scores a random sample of households, from version 1 for the first 15 days and version 2
after the promotion. Then every audited score is replayed (``online_store.replay``: the
household recomputed from the warehouse as known at that publication, scored with that
registered version) and must equal what was answered.

    python bench/bench_replay.py          # ~10 min on 2 cores
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import sqlite3
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench/out/replay"
SECRET = b"test-secret"
NAME = "credref-reference"
PER_DAY = 35


def train_two(home: Path, wh: Path) -> None:
    """Versions 1 and 2 of the registered model (additive boosters, 60 and 150 rounds)."""
    import duckdb
    import mlflow
    from mlflow.tracking import MlflowClient

    from features.dataset import as_of_dates, build_training_set
    from training.calibration import make_scoring_model
    from training.data import load_training_set, split_out_of_time
    from training.models import fit_booster, points_table
    from training.registry import CHAMPION, log_scoring_model, use_tracking

    con = duckdb.connect(str(wh), read_only=True)
    build_training_set(con, as_of_dates(date(2022, 6, 30), date(2025, 6, 30), 6), home / "ds")
    con.close()
    df, _ = load_training_set(home / "ds")
    tr, va, _ = split_out_of_time(df, date(2023, 12, 31), date(2024, 6, 30))
    use_tracking(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts", "credref")
    for seed, rounds in ((1, 60), (2, 150)):
        booster = fit_booster("additive", tr, va, {}, seed=seed, rounds=rounds)
        model = make_scoring_model(booster, "additive", va.X, va.y, points_table(booster, va.X))
        with mlflow.start_run():
            version = log_scoring_model(model, tr.X.head(50), NAME)
        if version == "1":
            MlflowClient().set_registered_model_alias(NAME, CHAMPION, version)


def service(home: Path, online: Path):
    """The service app on ``home`` (champion as registered now)."""
    from starlette.testclient import TestClient

    from tests.helpers import service_env

    os.environ.update(
        service_env(home, CREDREF_ONLINE_DIR=str(online), CREDREF_MAX_SNAPSHOT_AGE_DAYS="off")
    )
    import serving.service

    mod = importlib.reload(serving.service)
    return TestClient(mod.ReferenceService.to_asgi())


def main() -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from online_store.reader import OnlineStore
    from online_store.refresh import RefreshTask, refresh
    from online_store.replay import replay
    from records.changeset import read_changeset
    from records.ingest import ingest
    from serving.keys import KeyStore
    from tests.conftest import living_export
    from training.registry import CHAMPION, load_version

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    domain = living_export(OUT / "domain", history=True, feed_days=30)
    home, online, feed = OUT / "home", OUT / "home/online", OUT / "feed"
    home.mkdir()
    feed.mkdir()
    wh = home / "warehouse.duckdb"
    ingest(domain, wh, progress=False)
    train_two(home, wh)
    days = sorted((domain / "feed").iterdir())
    refresh(
        RefreshTask(wh, None, online, SECRET, as_of=read_changeset(days[0]).day - timedelta(days=1))
    )
    key = KeyStore(home / "keys.sqlite").create("replay-bench", ["score"])[1]
    auth = {"Authorization": f"Bearer {key}"}
    rng = random.Random(3)
    answered: dict[str, dict] = {}
    client = service(home, online).__enter__()
    for i, d in enumerate(days):
        if i == len(days) // 2:  # the promotion: version 2 answers from here on
            client.__exit__(None, None, None)
            MlflowClient().set_registered_model_alias(NAME, CHAMPION, "2")
            client = service(home, online).__enter__()
        (feed / d.name).symlink_to(d)
        refresh(RefreshTask(wh, feed, online, SECRET))
        with OnlineStore(online).current() as snap:
            frame = snap.frame()
        codes = frame[frame.status == "operating"].uscc.tolist()
        for uscc in rng.sample(codes, PER_DAY):
            r = client.post("/v1/score", json={"uscc": uscc, "purpose": "onboarding"}, headers=auth)
            assert r.status_code == 200, r.text
            answered[r.json()["request_id"]] = r.json()
    client.__exit__(None, None, None)

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    cache: dict = {}

    def model(version: str):
        if version not in cache:
            cache[version] = load_version(NAME, version).unwrap_python_model().model
        return cache[version]

    t = time.perf_counter()
    results = [replay(rid, home / "audit.sqlite", online, wh, model) for rid in answered]
    took = time.perf_counter() - t
    audit = sqlite3.connect(home / "audit.sqlite")
    by_version = dict(
        audit.execute(
            "SELECT model_version, count(*) FROM audit WHERE endpoint = '/v1/score' GROUP BY 1"
        ).fetchall()
    )
    result = {
        "benchmark": "replay",
        "date": time.strftime("%F"),
        "days": len(days),
        "answers": len(results),
        "publications": len({r.publication for r in results}),
        "by_model_version": by_version,
        "replayed_equal": sum(r.equal for r in results),
        "differences": [r.differences for r in results if not r.equal][:5],
        "replay_s_per_answer": round(took / len(results), 3),
    }
    (ROOT / "bench/out/replay.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if result["replayed_equal"] != len(results):
        raise SystemExit("some answers did not replay")


if __name__ == "__main__":
    main()
