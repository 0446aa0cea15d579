"""The gate alone, around a minimal app: limits and brute force, with a real key store and
a real audit log."""

from __future__ import annotations

import json
import sqlite3
import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from stdnum.cn import uscc

from serving.audit import AuditLog
from serving.gateway import STATE_KEY, Gateway, TokenBucket
from serving.keys import KeyStore


def _app(tmp_path, rate: float = 1000.0, failures: float = 1000.0, window_s: float = 60.0):
    async def score(request):
        ex = request.scope["state"][STATE_KEY]
        ex.outcome = {"echo": "ok"}
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/v1/score", score, methods=["POST", "GET"])])
    keys = KeyStore(tmp_path / "keys.sqlite")
    audit = AuditLog(tmp_path / "audit.sqlite")
    app.add_middleware(
        Gateway,
        keys=keys,
        audit=audit,
        rate_limit=rate,
        auth_failure_limit=failures,
        max_body_bytes=1024,
        audit_aggregate_s=window_s,
    )
    return app, keys


def _rows(tmp_path):
    con = sqlite3.connect(tmp_path / "audit.sqlite")
    return [json.loads(r[0]) for r in con.execute("SELECT outcome FROM audit ORDER BY seq")]


def test_a_key_over_its_rate_gets_429_with_retry_after_and_is_audited(tmp_path):
    app, keys = _app(tmp_path, rate=5.0)
    _, secret = keys.create("p", ["score"])
    body = {"uscc": "92440300MA5DKQ0E2" + "Y", "purpose": "onboarding"}
    with TestClient(app) as c:
        codes = [
            c.post("/v1/score", json=body, headers={"X-API-Key": secret}).status_code
            for _ in range(12)
        ]
        limited = c.post("/v1/score", json=body, headers={"X-API-Key": secret})
    assert 429 in codes and codes.count(429) >= 5
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["code"] == "rate_limited"
    rows = _rows(tmp_path)
    assert (
        len(rows) == 13
        and sum(r.get("error") == "rate_limited" for r in rows) == codes.count(429) + 1
    )


def _counted(tmp_path, total: int, timeout_s: float = 30.0) -> list[dict]:
    """The audit's rows once their counts reach ``total`` (the window's flush is a timer)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = _rows(tmp_path)
        if sum(r.get("count", 0) for r in rows) >= total:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"the counts did not reach {total}: {_rows(tmp_path)}")


def test_guessing_keys_is_slowed_down_and_every_guess_counted_in_the_audit(tmp_path):
    app, keys = _app(tmp_path, failures=2.0, window_s=0.5)
    _, secret = keys.create("p", ["score"])
    with TestClient(app) as c:
        guesses = [
            c.post("/v1/score", json={}, headers={"Authorization": f"Bearer crk_{i:012x}_x"})
            for i in range(25)
        ]
        codes = [g.status_code for g in guesses]
        rows = _counted(tmp_path, 25)
    assert codes[:10] == [401] * 10  # the burst
    assert codes.count(429) >= 10
    assert {g.json()["error"]["code"] for g in guesses} == {"invalid_key", "too_many_failures"}
    # one row per (client, endpoint, code) and window, with the count: not one per guess
    by_code: dict[str, int] = {}
    for r in rows:
        by_code[r["error"]] = by_code.get(r["error"], 0) + r["count"]
    assert by_code == {"invalid_key": codes.count(401), "too_many_failures": codes.count(429)}
    assert len(rows) <= 2 * 3  # two codes, a window of 0.5 s: at most a few windows
    text = (tmp_path / "audit.sqlite").read_bytes()
    assert secret.encode() not in text and b"crk_000000000000_x" not in text


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(tmp_path):
    app, keys = _app(tmp_path)
    _, secret = keys.create("p", ["score"])
    with TestClient(app) as c:
        r = c.post(
            "/v1/score",
            content=b'{"uscc": "' + b"9" * 5000 + b'"}',
            headers={"X-API-Key": secret, "Content-Type": "application/json"},
        )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_the_token_bucket_refills_at_its_rate():
    b = TokenBucket(rate=1000.0, burst=2.0)
    assert b.allow("k") and b.allow("k") and not b.allow("k")
    import time

    time.sleep(0.01)
    assert b.allow("k")
    assert b.allow("other") and b.allow("other")


def test_a_window_keeps_at_most_max_clients_apart_and_counts_the_rest_together():
    import asyncio

    from serving.tally import MAX_CLIENTS, OTHER, RefusalTally

    written = []

    async def run():
        loop = asyncio.get_running_loop()

        def submit(record):
            written.append(record)
            fut = loop.create_future()
            fut.set_result("h")
            return fut

        tally = RefusalTally(submit, window_s=3600)
        for i in range(MAX_CLIENTS + 500):
            tally.add(f"10.0.{i // 256}.{i % 256}", "invalid_key", 401)
            tally.add(f"10.0.{i // 256}.{i % 256}", "invalid_key", 401)
        tally.flush()

    asyncio.run(run())
    assert len(written) == MAX_CLIENTS + 1
    other = [r for r in written if r.client == OTHER]
    assert [r.outcome["count"] for r in other] == [2 * 500]
    assert sum(r.outcome["count"] for r in written) == 2 * (MAX_CLIENTS + 500)
    assert {r.endpoint for r in written} == {"before_key"} and {r.key_id for r in written} == {None}


def test_the_body_is_parsed_once_and_the_app_behind_gets_none_of_the_clients_bytes(tmp_path):
    seen = {}

    async def score(request):
        ex = request.scope["state"][STATE_KEY]
        seen["bytes"], seen["model"] = await request.body(), ex.body
        ex.outcome = {"echo": "ok"}
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/v1/score", score, methods=["POST"])])
    keys = KeyStore(tmp_path / "keys.sqlite")
    audit = AuditLog(tmp_path / "audit.sqlite")
    limits = {"rate_limit": 1000.0, "auth_failure_limit": 1000.0, "max_body_bytes": 1024}
    app.add_middleware(Gateway, keys=keys, audit=audit, **limits)
    _, secret = keys.create("p", ["score"])
    base = "92440300MA5DKQ0E2"
    code = base + uscc.calc_check_digit(base)
    sent = f'{{"uscc": "{code.lower()}", "purpose": "periodic_review"}}'
    with TestClient(app) as c:
        r = c.post(
            "/v1/score",
            content=sent.encode(),
            headers={"X-API-Key": secret, "Content-Type": "application/json"},
        )
    assert r.status_code == 200, r.text
    assert seen["bytes"] == b"{}"  # BentoML would parse nothing of the client's
    assert seen["model"].uscc == code and seen["model"].purpose == "periodic_review"
