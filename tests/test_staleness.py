"""The staleness guard: past CREDREF_MAX_SNAPSHOT_AGE_DAYS the service is not ready and
refuses to score or verify (audited), so a stopped refresh never becomes silent use of
records repaired since; the domain's clock is CREDREF_TODAY, never the test's calendar."""

from __future__ import annotations

import importlib
import json
import os
import sqlite3
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from serving.keys import KeyStore
from tests.helpers import SERVICE_AS_OF, relate, service_env


@pytest.fixture()
def serve(service_home):
    """A service on the served test home with extra settings; yields (client, key)."""
    saved = dict(os.environ)
    clients = []

    def start(**extra: str):
        os.environ.update(service_env(service_home, **extra))
        import serving.service

        service = importlib.reload(serving.service)
        client = TestClient(service.ReferenceService.to_asgi())
        client.__enter__()
        clients.append(client)
        key = KeyStore(service_home / "keys.sqlite").create(
            "stale-test", ["verify", "score", "batch"]
        )
        relate(service_home, "stale-test")
        return client, key[1]

    yield start
    for c in clients:
        c.__exit__(None, None, None)
    os.environ.clear()
    os.environ.update(saved)


def _operating(home) -> str:
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    return snap.execute("SELECT uscc FROM subjects WHERE status = 'operating' LIMIT 1").fetchone()[
        0
    ]


def _last_audit(home) -> dict:
    con = sqlite3.connect(home / "audit.sqlite")
    con.row_factory = sqlite3.Row
    row = dict(con.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT 1").fetchone())
    return {**row, "outcome": json.loads(row["outcome"])}


def _day(days: int) -> str:
    return (SERVICE_AS_OF + timedelta(days=days)).isoformat()


def test_past_the_allowed_age_nothing_is_answered_and_the_refusal_is_audited(serve, service_home):
    client, key = serve(CREDREF_TODAY=_day(3))
    auth = {"Authorization": f"Bearer {key}"}
    uscc = _operating(service_home)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "600"
    said = ready.json()  # the cause, for the load balancer's log and the operator
    assert said["ready"] is False and said["cause"] == "snapshot_stale"
    assert said["as_of"] == SERVICE_AS_OF.isoformat() and said["today"] == _day(3)
    assert said["age_days"] == 3 and said["max_age_days"] == 2
    for path, body in (
        ("/v1/score", {"uscc": uscc, "purpose": "onboarding"}),
        ("/v1/verify", {"uscc": uscc, "purpose": "onboarding", "operator_name": "x"}),
        ("/v1/score_batch", {"usccs": [uscc], "purpose": "onboarding"}),
    ):
        r = client.post(path, json=body, headers=auth)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "snapshot_stale"
        assert r.headers["retry-after"] == "600"  # the refresh is late: not a matter of seconds
        row = _last_audit(service_home)
        assert row["endpoint"] == path and row["outcome"]["error"] == "snapshot_stale"


def test_within_the_allowed_age_answers_name_their_publication(serve, service_home):
    client, key = serve(CREDREF_TODAY=_day(2))
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["age_days"] == 2 and "cause" not in ready.json()
    uscc = _operating(service_home)
    r = client.post(
        "/v1/score",
        json={"uscc": uscc, "purpose": "onboarding"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    current = os.readlink(service_home / "online" / "current")
    row = _last_audit(service_home)
    assert row["outcome"]["publication"] == current.removeprefix("snap-").removesuffix(".sqlite")
    assert row["model_version"] == "1"


def test_the_guard_can_be_turned_off(serve, service_home):
    client, key = serve(CREDREF_TODAY=_day(400), CREDREF_MAX_SNAPSHOT_AGE_DAYS="off")
    assert client.get("/readyz").status_code == 200
    r = client.post(
        "/v1/score",
        json={"uscc": _operating(service_home), "purpose": "onboarding"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200


def test_serve_warns_when_the_publication_is_stale_for_the_clock_in_force(
    service_home, monkeypatch
):
    from typer.testing import CliRunner

    from credref.cli.app import app

    for k, v in service_env(service_home).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CREDREF_TODAY", _day(5))

    def started(*args):  # where the service would take over this process
        raise SystemExit(0)

    monkeypatch.setattr(os, "execvpe", started)
    said = CliRunner().invoke(app, ["serve"]).output
    assert "warning: publication" in said and "5 days older than today" in said
    assert "snapshot_stale" in said and "credref refresh" in said
    monkeypatch.setenv("CREDREF_TODAY", _day(1))
    assert "warning" not in CliRunner().invoke(app, ["serve"]).output
