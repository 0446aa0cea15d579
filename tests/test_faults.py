"""Injected faults on a real server: a killed worker, a publication under load, MLflow gone
at start; and ingestion killed midway. Nothing answered may lack its audit row."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import duckdb
import httpx
import psutil
import pytest

from serving.keys import KeyStore
from tests.conftest import SECRET, SERVICE_AS_OF
from tests.helpers import copy_home, relate, start_server, stop_server, wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture
def home(service_home, tmp_path):
    """A private copy of the served home, so faults here cannot disturb other tests."""
    h = tmp_path / "home"
    copy_home(service_home, h)
    return h


def _operating(home: Path, n: int = 200) -> list[str]:
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    return [
        r[0]
        for r in snap.execute(
            "SELECT uscc FROM subjects WHERE status = 'operating' LIMIT ?", (n,)
        ).fetchall()
    ]


def _ready_within(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return True
        except httpx.TransportError:
            pass  # a connection handed to a worker that is still starting
        time.sleep(0.2)
    return False


class Load:
    """Threads posting /v1/score_batch (one code each half the time) until stopped."""

    def __init__(self, url: str, key: str, usccs: list[str], threads: int = 4):
        self.url, self.key, self.usccs = url, key, usccs
        self.answers: list[tuple[int, dict | None]] = []
        self.failures = 0
        self.errors: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        ) as c:
            k = i
            while not self._stop.is_set():
                k += 1
                codes = self.usccs[k % len(self.usccs) : k % len(self.usccs) + 3]
                try:
                    r = c.post("/v1/score_batch", json={"usccs": codes, "purpose": "onboarding"})
                    self.answers.append((r.status_code, r.json() if r.status_code == 200 else None))
                    if r.status_code != 200:
                        self.errors.append((r.status_code, r.text[:300]))
                except httpx.TransportError:
                    self.failures += 1  # the request died with its worker: never answered
                time.sleep(0.01)

    def wait_for(self, done, timeout: float = 90.0) -> None:
        """Wait until ``done(answers)`` holds (a state, not a time); fail after timeout."""
        deadline = time.monotonic() + timeout
        while not done(self.answers):
            assert time.monotonic() < deadline, f"not reached in {timeout} s"
            time.sleep(0.05)

    def wait_answers(self, more: int) -> None:
        """Wait until ``more`` further answers have arrived."""
        target = len(self.answers) + more
        self.wait_for(lambda answers: len(answers) >= target)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()


def _workers(pid: int) -> list[psutil.Process]:
    """The live service workers under the server process (zombies and the exited skipped)."""
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "worker-id" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _audited(home: Path) -> set[str]:
    con = sqlite3.connect(home / "audit.sqlite")
    return {r[0] for r in con.execute("SELECT request_id FROM audit")}


@contextmanager
def _serving(home: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """A real 2-worker server on ``home`` and a key with score and batch; stopped after."""
    _, key = KeyStore(home / "keys.sqlite").create("faults", ["score", "batch"])
    relate(home, "faults")
    log = tmp_path / "server.log"
    proc, url = start_server(home, log, workers=2)
    try:
        wait_ready(url, proc, log)
        yield proc, url, key
    finally:
        stop_server(proc)


def test_a_killed_worker_is_replaced_and_every_answer_was_audited(home, tmp_path):
    with _serving(home, tmp_path) as (proc, url, key):
        with Load(url, key, _operating(home)) as load:
            load.wait_answers(50)
            workers = _workers(proc.pid)
            assert len(workers) == 2
            os.kill(workers[0].pid, signal.SIGKILL)
            deadline = time.monotonic() + 90  # a new worker loads model and snapshot anew
            while time.monotonic() < deadline:
                after = _workers(proc.pid)
                if len(after) == 2 and workers[0].pid not in {p.pid for p in after}:
                    break
                time.sleep(0.2)
            load.wait_answers(100)  # and serves a while
        assert len(after) == 2 and workers[0].pid not in {p.pid for p in after}
        assert _ready_within(url, 60)  # the new worker may still be loading: a state to wait on
    ok = [a for s, a in load.answers if s == 200]
    assert len(ok) > 100
    audited = _audited(home)
    assert all(a["request_id"] in audited for a in ok)
    statuses = {s for s, _ in load.answers}
    log = (tmp_path / "server.log").read_text(errors="replace").splitlines()
    trouble = [line for line in log if "rror" in line or "failed" in line][:10]
    assert statuses <= {200, 503}, (statuses, load.errors[:5], trouble)


def test_publishing_under_load_gives_no_errors_and_never_mixes_snapshots(home, tmp_path):
    from online_store.publish import publish

    with _serving(home, tmp_path) as (_, url, key), Load(url, key, _operating(home)) as load:
        load.wait_answers(30)
        con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
        publish(con, date(2026, 8, 31), home / "online", SECRET)
        con.close()
        load.wait_for(lambda answers: any(a and a["as_of"] == "2026-08-31" for _, a in answers))
        load.wait_answers(30)  # and answers from it a while
    assert load.failures == 0
    log = (tmp_path / "server.log").read_text(errors="replace").splitlines()
    trouble = [line for line in log if "rror" in line or "Traceback" in line][:20]
    assert {s for s, _ in load.answers} == {200}, (load.errors[:5], trouble)
    seen = set()
    for _, a in load.answers:
        days = {a["as_of"], *(r.get("as_of") for r in a["results"] if "as_of" in r)}
        assert len(days) == 1, a  # one snapshot per answer
        seen |= days
    assert seen == {str(SERVICE_AS_OF), "2026-08-31"}  # both served, the new one last
    assert load.answers[-1][1]["as_of"] == "2026-08-31"


def test_the_service_starts_from_bentomls_store_when_mlflow_is_unreachable(home, tmp_path):
    from scoring.served import BENTO_MODEL, import_champion, use_store

    use_store(home / "bentoml")
    import_champion(f"sqlite:///{home / 'mlflow.db'}", "credref-reference")  # imported before
    (home / "mlflow.db").rename(home / "mlflow.db.away")  # the tracking store is gone
    log = tmp_path / "server.log"
    proc, url = start_server(home, log, workers=1)
    try:
        wait_ready(url, proc, log)
        _, key = KeyStore(home / "keys.sqlite").create("faults", ["score"])
        relate(home, "faults")
        r = httpx.post(
            f"{url}/v1/score",
            json={"uscc": _operating(home, 1)[0], "purpose": "onboarding"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200 and r.json()["model_version"] == "1"
    finally:
        stop_server(proc)
    text = log.read_text(errors="replace")
    assert "MLflow unavailable" in text and BENTO_MODEL in text
    assert not (home / "mlflow.db").exists()  # nothing created in its place


def test_ingestion_killed_midway_leaves_the_old_state_and_a_rerun_completes(
    small_warehouse, small_export, tmp_path
):
    from synth.generate import generate

    wh = tmp_path / "wh.duckdb"
    shutil.copy(small_warehouse, wh)
    before = duckdb.connect(str(wh), read_only=True)
    counts = dict(
        before.execute(
            "SELECT 'households', count(*) FROM households UNION ALL "
            "SELECT 'penalties', count(*) FROM penalties"
        ).fetchall()
    )
    before.close()
    bigger = tmp_path / "export"
    # big enough that the other tables take a while after the first is loaded (the kill
    # waits on the log line saying so, not on a timer)
    generate(bigger, 60_000, 9, date(2026, 9, 30), SECRET, workers=1, progress=False)
    env = {**os.environ, "CREDREF_WAREHOUSE": str(wh), "CREDREF_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "credref.cli", "-v", "ingest", str(bigger)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    # Killed once the first table is loaded inside the transaction and the rest are not.
    assert proc.stderr is not None
    for line in proc.stderr:
        if "households:" in line and "not yet committed" in line:
            break
    assert proc.poll() is None, "ingest finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = duckdb.connect(str(wh), read_only=True)
    assert (
        dict(
            after.execute(
                "SELECT 'households', count(*) FROM households UNION ALL "
                "SELECT 'penalties', count(*) FROM penalties"
            ).fetchall()
        )
        == counts
    )
    after.close()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    done = duckdb.connect(str(wh), read_only=True)
    assert done.execute("SELECT count(*) FROM households").fetchall()[0][0] > counts["households"]
    done.close()
