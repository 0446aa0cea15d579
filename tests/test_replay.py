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
from stdnum.cn import uscc as s_uscc
from typer.testing import CliRunner

from online_store.reader import LEDGER
from online_store.replay import ReplayError, ledger, recompute, replay
from records.changeset import write_changeset
from records.ingest import ingest
from records.schema import PENALTIES, arrow_schema
from serving.keys import KeyStore
from serving.objections import ObjectionStore
from tests.helpers import SERVICE_AS_OF, copy_home, relate, service_env

UNREGISTERED = "92440300MA5DKQ0E2" + s_uscc.calc_check_digit("92440300MA5DKQ0E2")
UNRELATED = "92440300MA5DKQ0E3" + s_uscc.calc_check_digit("92440300MA5DKQ0E3")


@pytest.fixture(scope="module")
def answered(service_home):
    """Three /v1/score answers from the served home, by request id and household; and
    two refusals by status (404 for a related code not registered, 403 no_relation)."""
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
    relate(service_home, "replay-test", [*usccs, UNREGISTERED])
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
        refused = {}
        for u, status in ((UNREGISTERED, 404), (UNRELATED, 403)):
            r = client.post(
                "/v1/score",
                json={"uscc": u, "purpose": "onboarding"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == status, r.text
            refused[status] = r.json()["request_id"]
    os.environ["CREDREF_TODAY"] = (SERVICE_AS_OF + timedelta(days=9)).isoformat()
    late = importlib.reload(serving.service)  # the same publication, nine days later
    with TestClient(late.ReferenceService.to_asgi()) as client:
        r = client.post(
            "/v1/score",
            json={"uscc": usccs[0], "purpose": "onboarding"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "snapshot_stale", r.text
        refused[503] = r.json()["request_id"]
    yield out, refused
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def answers(answered):
    return answered[0]


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
    answers, service_home, tmp_path
):
    home = service_home
    model = _model(home)
    objected = ObjectionStore(home / "watch.sqlite").markers
    for rid in answers:
        r = replay(
            rid, home / "audit.sqlite", home / "online", home / "warehouse.duckdb", model, objected
        )
        assert r.equal, r.differences
        assert set(r.recorded) == {"status", "class", "score", "reasons", "objected"}
        assert r.as_of == SERVICE_AS_OF.isoformat()
    # a late entry arrives after the publication: today's answer would differ, the replay not
    wh = tmp_path / "wh.duckdb"
    shutil.copy(home / "warehouse.duckdb", wh)
    rid, uscc = next(iter(answers.items()))
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
    assert replay(rid, home / "audit.sqlite", home / "online", wh, model, objected).equal


def test_a_replay_reports_the_differences(answers, service_home, tmp_path):
    home = tmp_path / "home"
    copy_home(service_home / "online", home / "online")
    rid, uscc = next(iter(answers.items()))
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
    objected = ObjectionStore(service_home / "watch.sqlite").markers
    r = replay(
        rid, service_home / "audit.sqlite", home / "online", wh, _model(service_home), objected
    )
    assert not r.equal and "score" in r.differences


def test_a_not_found_answer_is_compared_and_a_refusal_is_not_replayed(
    answered, service_home, tmp_path
):
    _, refused = answered
    audit = tmp_path / "audit.sqlite"
    with sqlite3.connect(service_home / "audit.sqlite") as src, sqlite3.connect(audit) as dst:
        src.backup(dst)  # with what is still in the write-ahead log
    args = (service_home / "online", service_home / "warehouse.duckdb", _model(service_home))
    r = replay(refused[404], audit, *args)
    assert r.recorded == {"found": False} and r.equal
    # the row's subject changed to a household operating that day: the replay must differ
    operating = next(iter(answered[0].values()))
    with sqlite3.connect(audit) as con:
        con.execute("UPDATE audit SET subject = ? WHERE request_id = ?", (operating, refused[404]))
    r = replay(refused[404], audit, *args)
    assert not r.equal and r.differences["found"] == (False, True)
    with pytest.raises(ReplayError, match=r"not an answer from a publication|not replayable"):
        replay(refused[403], audit, *args)


def test_the_cli_replays_and_refuses_what_it_cannot(answers, service_home, monkeypatch):
    from credref.cli.app import app

    for k, v in service_env(service_home).items():
        monkeypatch.setenv(k, v)
    rid = next(iter(answers))
    ok = CliRunner().invoke(app, ["audit", "replay", rid])
    assert ok.exit_code == 0, ok.output
    assert "equal" in ok.output
    missing = CliRunner().invoke(app, ["audit", "replay", "no-such-request"])
    assert missing.exit_code == 2 and "no audit row" in missing.output


def _outcome(home, rid: str) -> str:
    con = sqlite3.connect(home / "audit.sqlite")
    return con.execute("SELECT outcome FROM audit WHERE request_id = ?", (rid,)).fetchone()[0]


def test_a_stale_refusal_is_rebuilt_from_its_publication_day_and_its_own(
    answered, service_home, tmp_path
):
    _, refused = answered
    audit = tmp_path / "audit.sqlite"
    with sqlite3.connect(service_home / "audit.sqlite") as src, sqlite3.connect(audit) as dst:
        src.backup(dst)
    args = (service_home / "online", service_home / "warehouse.duckdb", _model(service_home))
    r = replay(refused[503], audit, *args)
    assert r.recorded == {"refused": "snapshot_stale"} and r.equal
    assert r.as_of == SERVICE_AS_OF.isoformat()  # the publication it refused to answer from
    # the day recorded moved within the allowed age: the refusal was wrong, and says so
    with sqlite3.connect(audit) as con:
        (outcome,) = con.execute(
            "SELECT outcome FROM audit WHERE request_id = ?", (refused[503],)
        ).fetchone()
        moved = {**json.loads(outcome), "today": (SERVICE_AS_OF + timedelta(days=1)).isoformat()}
        con.execute(
            "UPDATE audit SET outcome = ? WHERE request_id = ?", (json.dumps(moved), refused[503])
        )
    r = replay(refused[503], audit, *args)
    assert not r.equal and r.differences["refused"] == ("snapshot_stale", None)
