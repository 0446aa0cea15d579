"""Merchant monitoring through the service in process (ASGI client, real stores, the real
champion): the watch rule, per-platform invisibility, the cap, routes and methods, the
change feed read page by page and after a restart, and the audit of every call."""

from __future__ import annotations

import importlib
import sqlite3
from datetime import timedelta

import duckdb
import pytest
from starlette.testclient import TestClient

from serving.audit import AuditLog
from serving.keys import KeyStore
from serving.watch import WATCH_DAYS, Answer, WatchStore
from tests.helpers import SERVICE_AS_OF, raw, where

ALL = ["verify", "score", "watch"]


@pytest.fixture(scope="module")
def home(served_each_backend):
    return served_each_backend


def _client(home):
    import serving.service

    return TestClient(importlib.reload(serving.service).ReferenceService.to_asgi())


@pytest.fixture(scope="module")
def client(home):
    with _client(home) as c:
        yield c


@pytest.fixture(scope="module")
def keys(home):
    store = KeyStore(where("keys"))
    return {
        "a": store.create("watch-a", ALL)[1],
        "a2": store.create("watch-a", ALL)[1],  # a second key of the same platform
        "b": store.create("watch-b", ALL)[1],
        "capped": store.create("watch-c", ALL, watch_cap=1)[1],
        "noscope": store.create("watch-d", ["verify", "score"])[1],
    }


@pytest.fixture(scope="module")
def operating(home):
    """Operating households with their operator names (what a platform's applicant says)."""
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    hh = con.execute("SELECT uscc, operator_name FROM households ORDER BY uscc").df()
    con.close()
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    status = dict(snap.execute("SELECT uscc, status FROM subjects").fetchall())
    return hh[hh.uscc.map(status) == "operating"].reset_index(drop=True)


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _verify(client, key, hh, right: bool = True) -> None:
    name = hh.operator_name if right else hh.operator_name + "某"
    r = client.post("/v1/verify", json={"uscc": hh.uscc, "operator_name": name}, headers=H(key))
    assert r.status_code == 200, r.text


def _watch(client, key, codes):
    r = client.post(
        "/v1/watch", json={"usccs": codes, "purpose": "merchant_monitoring"}, headers=H(key)
    )
    assert r.status_code == 200, r.text
    return [x.get("error", {}).get("code", "watched") for x in r.json()["results"]]


def test_watching_needs_a_recent_match_and_is_invisible_to_other_platforms(
    client, keys, operating, home
):
    h1, h2, h3 = operating.iloc[0], operating.iloc[1], operating.iloc[2]
    _verify(client, keys["a"], h1)
    _verify(client, keys["a"], h3, right=False)  # found, but only a mismatch
    _verify(client, keys["b"], h2)
    got = _watch(client, keys["a"], [h1.uscc, h2.uscc, "92-not-a-code", h3.uscc])
    assert got == ["watched", "no_relation", "invalid_uscc", "no_relation"]
    r = client.post(
        "/v1/watch",
        json={"usccs": [h1.uscc], "purpose": "merchant_monitoring"},
        headers=H(keys["a"]),
    ).json()["results"][0]
    assert r["expires_on"] == (SERVICE_AS_OF + timedelta(days=WATCH_DAYS)).isoformat()
    assert _watch(client, keys["b"], [h2.uscc]) == ["watched"]

    def listing(key):
        r = client.get("/v1/watch", headers=H(key))
        assert r.status_code == 200, r.text
        return r.json()["count"], [x["uscc"] for x in r.json()["usccs"]]

    assert listing(keys["a"]) == (1, [h1.uscc])
    # pages as the change feed's: `next` to pass as `after`, `more` when more follow
    _verify(client, keys["a"], h2)
    assert _watch(client, keys["a"], [h2.uscc]) == ["watched"]
    first = client.get("/v1/watch", params={"limit": 1}, headers=H(keys["a"])).json()
    assert first["more"] is True and first["next"] == min(h1.uscc, h2.uscc)
    rest = client.get(
        "/v1/watch", params={"limit": 1, "after": first["next"]}, headers=H(keys["a"])
    )
    assert rest.json()["more"] is False and rest.json()["next"] == max(h1.uscc, h2.uscc)
    client.request("DELETE", "/v1/watch", json={"usccs": [h2.uscc]}, headers=H(keys["a"]))
    assert listing(keys["a2"]) == (1, [h1.uscc])  # the platform's, whichever key
    assert listing(keys["b"]) == (1, [h2.uscc])  # never another platform's
    # another platform removing a code it does not watch changes nothing for the first
    r = client.request("DELETE", "/v1/watch", json={"usccs": [h1.uscc]}, headers=H(keys["b"]))
    assert r.status_code == 200, r.text
    assert listing(keys["a"]) == (1, [h1.uscc])
    rows = AuditLog(where("audit")).about(h1.uscc)
    assert [r["answer"] for r in rows if r["platform"] == "watch-b"] == ["unwatch: not_watched"]
    assert [r["answer"] for r in rows if r["endpoint"] == "/v1/watch"][-1] == "watch: watched"


def test_a_key_holds_at_most_its_cap(client, keys, operating):
    h1, h2 = operating.iloc[3], operating.iloc[4]
    for h in (h1, h2):
        _verify(client, keys["capped"], h)
    assert _watch(client, keys["capped"], [h1.uscc, h2.uscc]) == ["watched", "watch_cap_reached"]
    assert _watch(client, keys["capped"], [h1.uscc]) == ["watched"]  # a renewal is no new watch


def test_routes_methods_scopes_and_bad_queries_get_stable_codes(client, keys):
    def code(r):
        return r.status_code, r.json()["error"]["code"]

    for method, path in (
        ("POST", "/v1/watch"),
        ("GET", "/v1/watch"),
        ("DELETE", "/v1/watch"),
        ("GET", "/v1/changes"),
    ):
        body = {"json": {"usccs": ["x"]}} if method != "GET" else {}
        r = client.request(method, path, headers=H(keys["noscope"]), **body)
        assert code(r) == (403, "scope_not_granted"), (method, path)
    a = H(keys["a"])
    assert code(client.put("/v1/watch", headers=a)) == (405, "method_not_allowed")
    assert code(client.post("/v1/changes", json={}, headers=a)) == (405, "method_not_allowed")
    assert code(client.post("/v1/watch/remove", json={"usccs": []}, headers=a)) == (
        404,
        "unknown_route",
    )
    assert code(client.get("/v1/changes?after=bm90LWEtY3Vyc29y", headers=a)) == (
        400,
        "invalid_cursor",
    )
    assert code(client.get("/v1/changes?limit=0", headers=a)) == (400, "invalid_request")
    assert code(client.get("/v1/changes?limit=1001", headers=a)) == (400, "invalid_request")
    assert code(client.get("/v1/changes?limit=1&limit=2", headers=a)) == (400, "invalid_request")
    r = client.get("/v1/changes?secret_name=x", headers=a)
    assert code(r) == (400, "unknown_field") and "secret_name" not in r.text
    # another platform's cursor is not one issued to this platform
    cursor = client.get("/v1/changes", headers=H(keys["b"])).json()["next"]
    b_cursor = client.get(f"/v1/changes?after={cursor}", headers=H(keys["b"]))
    assert b_cursor.status_code == 200
    assert code(client.get(f"/v1/changes?after={cursor}", headers=a)) == (400, "invalid_cursor")


def test_the_change_feed_gives_a_platform_its_events_from_any_cursor_and_after_a_restart(
    client, keys, operating, home
):
    """Events derived by the refresh's own step (credref's CLI code) after the watched
    households' last answers are set back to another class and status."""
    from credref.cli.refresh import derive_and_print_events
    from settings import load_settings

    mine = [operating.iloc[i] for i in (10, 11, 12)]
    for h in mine:
        _verify(client, keys["a"], h)
    assert _watch(client, keys["a"], [h.uscc for h in mine]) == ["watched"] * 3
    store = WatchStore(where("watch"))
    rows = store.states([h.uscc for h in mine]).to_pylist()
    states = {r.pop("uscc"): Answer(**r) for r in rows}
    # as if yesterday's answers had been these (autocommit: each statement commits)
    con = raw("watch")
    flip = {"A": "D", "B": "D", "C": "A", "D": "A"}
    code0, code1 = mine[0].uscc, mine[1].uscc
    con.execute(
        "UPDATE subject_state SET risk_class = ? WHERE subject = ?",
        (flip[states[code0].risk_class], code0),
    )
    con.execute("UPDATE subject_state SET status = 'suspended' WHERE subject = ?", (code1,))
    con.execute("DELETE FROM meta WHERE key = 'derived_for'")
    con.close()
    derive_and_print_events(load_settings())
    derive_and_print_events(load_settings())  # a rerun adds nothing

    def read_all(c, key, after=""):
        out = []
        while True:
            r = c.get(f"/v1/changes?limit=1&after={after}", headers=H(key))
            assert r.status_code == 200, r.text
            out += r.json()["events"]
            after = r.json()["next"]
            if not r.json()["more"]:
                return out, after

    events, end = read_all(client, keys["a"])
    mine_events = [(e["uscc"], e["kind"]) for e in events if e["uscc"] in {code0, code1}]
    assert mine_events == [(code0, "class_changed"), (code1, "status_changed")]
    cls = next(e for e in events if e["kind"] == "class_changed")
    assert cls["from"] == flip[states[code0].risk_class] and cls["to"] == states[code0].risk_class
    assert cls["publication"] == SERVICE_AS_OF.isoformat() and cls["model_version"]
    assert 1 <= len(cls["reasons"]) <= 4 and all("guidance" in x for x in cls["reasons"])
    status = next(e for e in events if e["kind"] == "status_changed")
    assert (status["from"], status["to"]) == ("suspended", "operating")
    assert not {e["uscc"] for e in read_all(client, keys["b"])[0]} & {h.uscc for h in mine}
    with _client(home) as restarted:  # a new service on the same stores
        again, _ = read_all(restarted, keys["a"])
        assert again == events
        first = restarted.get("/v1/changes?limit=1", headers=H(keys["a"])).json()
        assert read_all(restarted, keys["a"], first["next"])[0] == events[1:]
        assert (
            restarted.get(f"/v1/changes?after={end}", headers=H(keys["a"])).json()["events"] == []
        )
    rows = AuditLog(where("audit")).about(code0)
    assert any(r["answer"] == "change-feed event: class_changed" for r in rows)
