"""Two serving hosts on one PostgreSQL: the service keeps answering when a host dies.

Two real ``credref serve`` processes, each with its own home (its own copy of the
publication and the model) and its own port, share one PostgreSQL server started for this
module (deploy/test-postgres.sh). A client spreads requests over both, as a load
balancer would, and moves to the other host when one does not answer."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
from pathlib import Path

import httpx
import psycopg
import pytest

from serving import launch
from serving.audit import AuditLog
from serving.keys import KeyStore
from serving.limits import VerifyLimits
from serving.migrations import upgrade
from serving.state import Postgres
from tests.conftest import SERVER_SCRIPT
from tests.helpers import copy_home, service_env, wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def database():
    """A PostgreSQL server of this module's own (it is restarted under load below)."""
    folder = tempfile.mkdtemp(prefix="credref-pg-hosts-")
    os.chmod(folder, 0o755)
    started = subprocess.run(
        [str(SERVER_SCRIPT), "start", folder, str(launch.free_port())],
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    upgrade(url)
    try:
        yield {"url": url, "folder": folder}
    finally:
        subprocess.run([str(SERVER_SCRIPT), "stop", folder], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _restart(database) -> None:
    """Restart the database server (a failover's effect on the service: it goes away and
    comes back on the same address)."""
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    folder = database["folder"]
    cmd = [str(bin_dir / "pg_ctl"), "-D", f"{folder}/data", "-l", f"{folder}/server.log"]
    owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # the server outlives pg_ctl: its output goes to its log, not to a pipe of ours
    subprocess.run(
        [*owner, *cmd, "-m", "fast", "-w", "restart"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def hosts(service_home, database, tmp_path_factory):
    """Two hosts: separate homes (copies of the served one), ports and processes."""
    url = database["url"]
    snap = sqlite3.connect(f"file:{service_home / 'online' / 'current'}?mode=ro", uri=True)
    operating = [r[0] for r in snap.execute("SELECT uscc FROM subjects WHERE status = 'operating'")]
    snap.close()
    VerifyLimits(Postgres(url)).remember_matches("alipay", operating)
    running = []
    for name in ("a", "b"):
        home = tmp_path_factory.mktemp(f"host-{name}") / "home"
        copy_home(service_home, home)
        for store in ("keys", "audit", "limits", "watch"):  # nothing shared through files
            (home / f"{store}.sqlite").unlink(missing_ok=True)
        port = launch.free_port()
        log = home.parent / "server.log"
        env = service_env(
            home, CREDREF_PORT=str(port), CREDREF_DATABASE_URL=url, CREDREF_RATE_LIMIT="100000"
        )
        proc = launch.start(env, log, workers=1)
        running.append({"name": name, "proc": proc, "url": f"http://127.0.0.1:{port}", "env": env})
    try:
        for h in running:
            wait_ready(h["url"], h["proc"], Path(h["env"]["CREDREF_HOME"]).parent / "server.log")
        yield {"hosts": running, "operating": operating, "db": url}
    finally:
        for h in running:
            if h["proc"].poll() is None:
                launch.stop(h["proc"], timeout=30)


def _key(url: str, scopes: list[str]) -> tuple[str, str]:
    key, secret = KeyStore(Postgres(url)).create("alipay", scopes, daily_households=10**6)
    return key.key_id, secret


def _client(base: str, secret: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"}, timeout=10)


def _audit_ids(url: str) -> list[str]:
    with psycopg.connect(url) as con:
        return [r[0] for r in con.execute("SELECT request_id FROM audit ORDER BY seq")]


class Spreader:
    """A load balancer's view: requests round-robin over the hosts; a host that does not
    answer is left for the next one."""

    def __init__(self, hosts: list[dict], secret: str):
        self.clients = [_client(h["url"], secret) for h in hosts]
        self.answers: list[dict] = []
        self.statuses: list[int] = []
        self.unreachable = 0
        self._sent = 0

    def score(self, code: str) -> None:
        start, self._sent = self._sent, self._sent + 1
        for attempt in range(len(self.clients)):
            c = self.clients[(start + attempt) % len(self.clients)]
            try:
                r = c.post("/v1/score", json={"uscc": code, "purpose": "onboarding"})
            except httpx.TransportError:
                self.unreachable += 1
                continue
            self.statuses.append(r.status_code)
            if r.status_code == 200:
                self.answers.append(r.json())
            return
        raise AssertionError("no host answered")


def _operators(home: Path, codes: list[str]) -> dict[str, str]:
    import duckdb

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT uscc, operator_name FROM households WHERE list_contains(?, uscc) "
            "AND operator_name IS NOT NULL",
            [codes],
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


def test_guessing_limits_and_watches_are_one_across_hosts(hosts):
    from serving.limits import LimitPolicy

    url, (a, b) = hosts["db"], hosts["hosts"]
    _, secret = _key(url, ["verify", "score", "watch"])
    clients = [_client(a["url"], secret), _client(b["url"], secret)]
    home = Path(a["env"]["CREDREF_HOME"])
    code, operator = next(iter(_operators(home, hosts["operating"][-50:]).items()))
    # mismatching claims on one household's operator, alternating between the hosts:
    # the same daily number is judged as on one host, then both refuse
    statuses = []
    for i in range(LimitPolicy().pair_daily + 3):
        r = clients[i % 2].post("/v1/verify", json={"uscc": code, "operator_name": operator + "x"})
        statuses.append(r.status_code)
    pair_daily = LimitPolicy().pair_daily
    assert statuses == [200] * pair_daily + [429] * 3
    # a watch made through one host is read through the other, and removed through it
    watched = hosts["operating"][-1]
    r = clients[0].post("/v1/watch", json={"usccs": [watched], "purpose": "merchant_monitoring"})
    assert r.status_code == 200 and r.json()["results"][0]["watched"] is True
    listed = clients[1].get("/v1/watch").json()
    assert [w["uscc"] for w in listed["usccs"]] == [watched]
    r = clients[1].request("DELETE", "/v1/watch", json={"usccs": [watched]})
    assert r.status_code == 200
    assert clients[0].get("/v1/watch").json()["count"] == 0


def test_a_host_killed_under_load_loses_no_answer_and_no_audit_row(hosts):
    url, (a, b) = hosts["db"], hosts["hosts"]
    _, secret = _key(url, ["score"])
    spreader = Spreader([a, b], secret)
    codes = hosts["operating"]
    for i in range(60):
        spreader.score(codes[i % len(codes)])
    launch.kill(a["proc"])  # kill -9, every process of the host: gone, mid-stream
    for i in range(60, 160):
        spreader.score(codes[i % len(codes)])
    assert spreader.unreachable >= 1  # the dead host was tried ...
    assert set(spreader.statuses) == {200}  # ... and every request answered by the other
    answered = [r["request_id"] for r in spreader.answers]
    audited = _audit_ids(url)
    assert len(answered) == 160
    for rid in answered:  # exactly one audit row for every answered request
        assert audited.count(rid) == 1
    report = AuditLog(Postgres(url)).verify()
    assert report.ok, report.problems
    # no answer mixes publications: one day, one model, whichever host answered
    assert {(r["as_of"], r["model_version"]) for r in spreader.answers} == {
        (spreader.answers[0]["as_of"], spreader.answers[0]["model_version"])
    }
    # the survivor goes on: a revocation made on the operator's side counts at once
    key_id, other = _key(url, ["score"])
    c = _client(b["url"], other)
    assert c.post("/v1/score", json={"uscc": codes[0], "purpose": "onboarding"}).status_code == 200
    revoked = subprocess.run(
        [launch.sys.executable, "-m", "credref", "keys", "revoke", key_id],
        env={**os.environ, **a["env"]},
        capture_output=True,
        text=True,
    )
    assert revoked.returncode == 0, revoked.stderr
    r = c.post("/v1/score", json={"uscc": codes[0], "purpose": "onboarding"})
    assert r.status_code == 401


def test_the_database_restarted_under_load_costs_503s_and_loses_nothing(hosts, database):
    url, b = hosts["db"], hosts["hosts"][1]
    _, secret = _key(url, ["score"])
    c = _client(b["url"], secret)
    codes = hosts["operating"]
    statuses: list[int] = []
    refusals: set[str] = set()
    answered: list[str] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set() or i < 40:
            r = c.post("/v1/score", json={"uscc": codes[i % len(codes)], "purpose": "onboarding"})
            statuses.append(r.status_code)
            if r.status_code == 200:
                answered.append(r.json()["request_id"])
            else:
                refusals.add(r.json()["error"]["code"])
            i += 1

    worker = threading.Thread(target=load)
    worker.start()
    _restart(database)
    stop.set()
    worker.join()
    assert set(statuses) <= {200, 503}  # fail closed while it is away, never a 500 ...
    assert 503 in statuses  # (it was away while requests came)
    # ... with a documented code naming the store that could not be reached
    assert refusals <= {"keys_unavailable", "audit_unavailable", "limits_unavailable"}
    assert statuses[-10:] == [200] * 10  # and answering again once it is back
    audited = _audit_ids(url)
    for rid in answered:
        assert audited.count(rid) == 1
    assert AuditLog(Postgres(url)).verify().ok
