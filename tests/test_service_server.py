"""A real server (``credref serve`` -> ``bentoml serve``, two workers) called over HTTP."""

from __future__ import annotations

import json
import sqlite3

import duckdb
import httpx
import pytest

from serving.audit import AuditLog
from serving.keys import KeyStore
from tests.helpers import start_server, stop_server, wait_ready

pytestmark = pytest.mark.slow


def test_a_real_server_answers_a_real_client_and_logs_no_personal_information(
    service_home, tmp_path
):
    home = service_home
    _, secret = KeyStore(home / "keys.sqlite").create("server-test", ["verify", "score", "batch"])
    _, scraper = KeyStore(home / "keys.sqlite").create("operator", ["metrics"])
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    operating = [
        r[0] for r in snap.execute("SELECT uscc FROM subjects WHERE status = 'operating' LIMIT 20")
    ]
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    hh = con.execute(
        "SELECT uscc, name, operator_name, operator_id_hmac, address FROM households "
        "WHERE list_contains(?, uscc) ORDER BY uscc",
        [operating],
    ).df()
    con.close()
    assert len(hh) == 20
    audit_before = AuditLog(home / "audit.sqlite").verify().rows
    log = tmp_path / "server.log"
    proc, url = start_server(home, log)
    try:
        wait_ready(url, proc, log)
        auth = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=url, headers=auth, timeout=30) as c:
            answered = 0
            for row in hh.itertuples():
                v = c.post(
                    "/v1/verify",
                    json={
                        "uscc": row.uscc,
                        "operator_name": row.operator_name,
                        "address": row.address,
                    },
                )
                assert v.status_code == 200, v.text
                assert v.json()["fields"]["operator_name"] == "match", v.text
                s = c.post("/v1/score", json={"uscc": row.uscc, "purpose": "onboarding"})
                assert s.status_code == 200 and s.json()["risk_class"] in "ABCD"
                assert "pd" not in s.json()
                answered += 2
            b = c.post("/v1/score_batch", json={"usccs": hh.uscc.tolist(), "purpose": "onboarding"})
            assert b.status_code == 200 and len(b.json()["results"]) == len(hh)
            bad = c.post("/v1/score", content=b"nope", headers={"Content-Type": "application/json"})
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
            # refusals before a key are counted per client and window (serving.tally), not
            # audited one row each: the three below are not in `answered`
            assert httpx.post(f"{url}/v1/score", json={}).status_code == 401
            answered += 2
            assert httpx.get(f"{url}/metrics").status_code == 401  # a key with `metrics` only
            metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {scraper}"})
            assert metrics.status_code == 200 and "credref_answers_total" in metrics.text
            answered += 1
            doc = httpx.get(f"{url}/docs.json").json()  # no key: it names no household
            assert "/v1/score" in doc["paths"]
            assert "get" in doc["paths"]["/v1/score_guide"]
            page = httpx.get(f"{url}/docs")  # Swagger UI, served by the service itself
            assert page.status_code == 200 and "/docs/swagger-ui-bundle.js" in page.text
            guide = c.get("/v1/score_guide")
            assert guide.status_code == 200, guide.text
            _a_guide_a_platform_can_read(guide.json())
            answered += 1
    finally:
        stop_server(proc)
    report = AuditLog(home / "audit.sqlite").verify()
    assert report.ok and report.rows == audit_before + answered
    text = log.read_text(errors="replace")
    assert "Service" in text or "serving" in text.lower()  # the log is the server's
    for value in [
        *hh.operator_name,
        *hh.address,
        *hh.operator_id_hmac,
        *hh["name"].dropna(),
        secret,
    ]:
        assert value not in text
    assert json.dumps(doc)  # the OpenAPI document is plain JSON


def _a_guide_a_platform_can_read(g: dict) -> None:
    """Four classes in order with touching bands and scores falling as the PD rises,
    observed rates with intervals, odds doubling every ``pdo`` points."""
    assert [c["class"] for c in g["classes"]] == ["A", "B", "C", "D"]
    for lower, upper in zip(g["classes"], g["classes"][1:], strict=False):
        assert lower["long_run_pd_to"] == upper["long_run_pd_from"]
        assert lower["score_from"] >= upper["score_to"]
    assert sum(c["households"] for c in g["classes"]) > 0
    for c in g["classes"]:
        if c.get("observed_rate") is not None:
            lo, hi = c["interval_95"]
            assert lo <= c["observed_rate"] <= hi
    odds = [r["odds_good_to_bad"] for r in g["score_to_odds"]]
    assert odds == sorted(odds) and odds[0] < odds[-1]
    assert g["horizon_months"] == 12 and "standing" in g["rating_philosophy"]


def test_the_server_refuses_to_start_without_a_model_or_snapshot(tmp_path):
    home = tmp_path / "empty"
    home.mkdir()
    log = tmp_path / "server.log"
    proc, _ = start_server(home, log, workers=1)
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            stop_server(proc)
    assert proc.returncode != 0
    text = log.read_text(errors="replace")
    assert "credref train" in text or "credref publish" in text, text[-2000:]


def test_a_platform_through_the_client_library(service_home, tmp_path):
    """client/ against the real server: every call a platform makes, and a refusal as a
    typed error with its stable code and Retry-After."""
    from client import CredrefClient, CredrefError

    home = service_home
    scopes = ["verify", "score", "batch", "watch"]
    _, secret = KeyStore(home / "keys.sqlite").create("client-test", scopes)
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    codes = [
        r[0] for r in snap.execute("SELECT uscc FROM subjects WHERE status = 'operating' LIMIT 3")
    ]
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    operators = dict(
        con.execute(
            "SELECT uscc, operator_name FROM households WHERE list_contains(?, uscc)", [codes]
        ).fetchall()
    )
    con.close()
    log = tmp_path / "server.log"
    proc, url = start_server(home, log)
    try:
        wait_ready(url, proc, log)
        with CredrefClient(url, secret, timeout_s=30) as api:
            assert api.ready()["ready"] is True
            with pytest.raises(CredrefError) as refused:  # no relation yet: told nothing
                api.score(codes[0])
            assert refused.value.status == 403 and refused.value.code == "no_relation"
            for uscc in codes:
                v = api.verify(uscc, operator_name=operators[uscc])
                assert v["found"] and v["fields"]["operator_name"] == "match"
            s = api.score(codes[0])
            assert s["risk_class"] in "ABCD" and 1 <= len(s["reasons"]) <= 4
            batch = api.score_batch(codes)
            assert [r["index"] for r in batch["results"]] == [0, 1, 2]
            watched = api.watch(codes)
            assert all(r["watched"] for r in watched["results"])
            assert api.watched()["count"] == 3
            assert api.changes()["events"] == [] and list(api.all_changes()) == []
            assert api.score_guide()["classes"][0]["class"] == "A"
            with pytest.raises(CredrefError) as invalid:
                api.score("92" + "0" * 16)  # a wrong check character
            assert invalid.value.code == "invalid_request" and invalid.value.details
    finally:
        stop_server(proc)
