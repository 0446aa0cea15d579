"""Replayable answers: every audited score names its publication and model version, and
``credref audit replay`` rebuilds it from the warehouse as known then, exactly."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sqlite3
from datetime import date, timedelta

import pyarrow as pa
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from features.changeset import write_changeset
from features.ingest import ingest
from features.schema import PENALTIES, arrow_schema
from serving.keys import KeyStore
from serving.online import LEDGER
from serving.replay import ledger, recompute, replay
from tests.helpers import SERVICE_AS_OF, relate, service_env


@pytest.fixture(scope="module")
def answered(service_home):
    """Three /v1/score answers from the served home, by request id and household."""
    saved = dict(os.environ)
    os.environ.update(service_env(service_home))
    import serving.service

    service = importlib.reload(serving.service)
    key = KeyStore(service_home / "keys.sqlite").create("replay-test", ["score"])[1]
    snap = sqlite3.connect(f"file:{service_home / 'online' / 'current'}?mode=ro", uri=True)
    usccs = [
        r[0]
        for r in snap.execute(
            "SELECT uscc FROM subjects WHERE status = 'operating' ORDER BY penalties_3y, uscc LIMIT 3"
        )
    ]
    relate(service_home, "replay-test", usccs)
    out = {}
    with TestClient(service.ReferenceService.to_asgi()) as client:
        for u in usccs:
            r = client.post(
                "/v1/score",
                json={"uscc": u, "purpose": "onboarding"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == 200, r.text
            out[r.json()["request_id"]] = u
    yield out
    os.environ.clear()
    os.environ.update(saved)


def _model(home):
    import mlflow

    from training.registry import load_version

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    return lambda v: load_version("credref-reference", v).unwrap_python_model().model


def _late_penalty(uscc: str) -> pa.Table:
    """A heavy penalty published before the as-of date that reaches the system later."""
    row = {
        "uscc": uscc,
        "decision_no": "LATE-1",
        "decided_on": date(2026, 5, 1),
        "procedure": "ordinary",
        "published_on": date(2026, 5, 10),
        "violation_type": "food_safety",
        "penalty_kinds": "fine;suspension_order",
        "fine_yuan": 200_000.0,
        "publicity_end": date(2029, 5, 9),
        "repaired_on": None,
        "withdrawn_on": None,
    }
    return pa.Table.from_pylist([row], schema=arrow_schema(PENALTIES))


def test_every_answer_replays_exactly_even_after_the_records_changed(
    answered, service_home, tmp_path
):
    home = service_home
    model = _model(home)
    for rid in answered:
        r = replay(rid, home / "audit.sqlite", home / "online", home / "warehouse.duckdb", model)
        assert r.equal, r.differences
        assert set(r.recorded) == {"status", "class", "score", "reasons"}
        assert r.as_of == SERVICE_AS_OF.isoformat()
    # a late entry arrives after the publication: today's answer would differ, the replay not
    wh = tmp_path / "wh.duckdb"
    shutil.copy(home / "warehouse.duckdb", wh)
    rid, uscc = next(iter(answered.items()))
    pub = ledger(home / "online")[json.loads(_outcome(home, rid))["publication"]]
    later = date.fromisoformat(pub["known_through"]) + timedelta(days=1)
    ingest(
        write_changeset(tmp_path / "cs", later, {"penalties": _late_penalty(uscc)}),
        wh,
        progress=False,
    )
    import duckdb

    con = duckdb.connect(str(wh), read_only=True)
    then = recompute(con, SERVICE_AS_OF, date.fromisoformat(pub["known_through"]), [uscc])
    now = recompute(con, SERVICE_AS_OF, later, [uscc])
    con.close()
    assert now.at[uscc, "penalty_max_severity"] == 3 != then.at[uscc, "penalty_max_severity"]
    assert replay(rid, home / "audit.sqlite", home / "online", wh, model).equal


def test_a_replay_reports_the_differences(answered, service_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(service_home / "online", home / "online", symlinks=True)
    rid, uscc = next(iter(answered.items()))
    name = json.loads(_outcome(service_home, rid))["publication"]
    wh = tmp_path / "wh.duckdb"
    shutil.copy(service_home / "warehouse.duckdb", wh)
    entry = ledger(home / "online")[name]
    later = date.fromisoformat(entry["known_through"]) + timedelta(days=1)
    ingest(
        write_changeset(tmp_path / "cs", later, {"penalties": _late_penalty(uscc)}),
        wh,
        progress=False,
    )
    # a ledger that claims more knowledge than the publication had: the replay differs
    with (home / "online" / LEDGER).open("a") as f:
        f.write(json.dumps({**entry, "known_through": later.isoformat()}) + "\n")
    r = replay(rid, service_home / "audit.sqlite", home / "online", wh, _model(service_home))
    assert not r.equal and "score" in r.differences


def test_the_cli_replays_and_refuses_what_it_cannot(answered, service_home, monkeypatch):
    from credref.cli import app

    for k, v in service_env(service_home).items():
        monkeypatch.setenv(k, v)
    rid = next(iter(answered))
    ok = CliRunner().invoke(app, ["audit", "replay", rid])
    assert ok.exit_code == 0, ok.output
    assert "equal" in ok.output
    missing = CliRunner().invoke(app, ["audit", "replay", "no-such-request"])
    assert missing.exit_code == 2 and "no audit row" in missing.output


def _outcome(home, rid: str) -> str:
    con = sqlite3.connect(home / "audit.sqlite")
    return con.execute("SELECT outcome FROM audit WHERE request_id = ?", (rid,)).fetchone()[0]
