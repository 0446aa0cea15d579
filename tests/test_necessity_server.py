"""Minimum necessity on every path, against a real server (two workers): a platform is
told about the households it has a relation with, and nothing else, through scores,
batches, watches and the feed; its budgets hold across keys, workers and a restart; no
client can grow the audit without bound; input never ends in a 5xx or an echo."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from datetime import date

import duckdb
import httpx
import pytest
from stdnum.cn import uscc as s_uscc

from serving.audit import AuditLog
from serving.keys import KeyStore
from serving.limits import Ask, Asker, VerifyLimits
from serving.watch import WatchStore
from tests.helpers import (
    SERVICE_AS_OF,
    copy_home,
    service_env,
    start_server,
    stop_server,
    wait_ready,
)

pytestmark = pytest.mark.slow

WINDOW_S = 1.0  # CREDREF_AUDIT_AGGREGATE_S: refusals before a key, counted per second
GUESSES = 20  # CREDREF_PLATFORM_DAILY_GUESSES: a key may make 10
WORKERS = 2


def _code(base: str) -> str:
    return base + s_uscc.calc_check_digit(base)


#: Valid household codes that are not registered in the test domain.
UNREGISTERED = [_code(f"92440300MA5DKQ{i:03d}") for i in range(3)]


def _start(home, log):
    proc, url = start_server(
        home,
        log,
        workers=WORKERS,
        CREDREF_RATE_LIMIT="100000",
        CREDREF_AUDIT_AGGREGATE_S=str(WINDOW_S),
        CREDREF_PLATFORM_DAILY_GUESSES=str(GUESSES),
    )
    wait_ready(url, proc, log)
    return proc, url


@pytest.fixture(scope="module")
def home(service_home, tmp_path_factory):
    """A private copy of the served home: this module restarts its server and floods it,
    which must not disturb the other modules' stores (nor theirs this one's)."""
    h = tmp_path_factory.mktemp("necessity-home") / "home"
    copy_home(service_home, h)
    return h


@pytest.fixture(scope="module")
def server(home, tmp_path_factory):
    log = tmp_path_factory.mktemp("necessity") / "server.log"
    proc, url = _start(home, log)
    state = {"proc": proc, "url": url, "log": log, "home": home}
    try:
        yield state
    finally:
        stop_server(state["proc"])


@pytest.fixture(scope="module")
def households(home):
    """Operating households with their registered name and operator, in code order."""
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    operating = [r[0] for r in snap.execute("SELECT uscc FROM subjects WHERE status = 'operating'")]
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT uscc, name, operator_name FROM households WHERE list_contains(?, uscc) "
        "AND name IS NOT NULL ORDER BY uscc",
        [operating],
    ).fetchall()
    con.close()
    return [{"uscc": u, "name": n, "operator_name": o} for u, n, o in rows]


def _take(households, start: int, n: int) -> list[dict]:
    """A slice of its own per test: the tests share one domain and one limits store."""
    return households[start : start + n]


def _key(home, platform: str, scopes: list[str], **kw) -> tuple[str, str]:
    key, secret = KeyStore(home / "keys.sqlite").create(platform, scopes, **kw)
    return key.key_id, secret


def _client(server, secret: str | None = None, **headers) -> httpx.Client:
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return httpx.Client(base_url=server["url"], headers=headers, timeout=30)


def _error(r: httpx.Response) -> str:
    return r.json()["error"]["code"]


def _verify(c: httpx.Client, h: dict, operator: str | None = None, **claims) -> dict:
    body = {"uscc": h["uscc"], **claims}
    if operator is not None:
        body["operator_name"] = operator
    r = c.post("/v1/verify", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _score(c: httpx.Client, code: str) -> httpx.Response:
    return c.post("/v1/score", json={"uscc": code, "purpose": "onboarding"})


def _batch(c: httpx.Client, codes: list[str]) -> list[dict]:
    r = c.post("/v1/score_batch", json={"usccs": codes, "purpose": "risk_reference"})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _watch(c: httpx.Client, codes: list[str]) -> list[str]:
    r = c.post("/v1/watch", json={"usccs": codes, "purpose": "merchant_monitoring"})
    assert r.status_code == 200, r.text
    return [x.get("error", {}).get("code", "watched") for x in r.json()["results"]]


def _item_codes(results: list[dict]) -> list[str]:
    return [x["error"]["code"] if "error" in x else "scored" for x in results]


# --- a relation before an answer, and one budget over every path ------------------------


def test_a_register_walk_is_refused_from_the_first_code_and_ends_at_the_budget(server, households):
    home = server["home"]
    KeyStore(home / "keys.sqlite").set_platform("walker", daily_households=60)
    walker_id, walker = _key(home, "walker", ["verify", "score", "batch"], daily_households=40)
    _, second = _key(home, "walker", ["score", "batch"], daily_households=40)
    _, third = _key(home, "walker", ["score"])
    hh = _take(households, 0, 80)
    with _client(server, walker) as c:
        # registered or not, the answer is the same refusal: nothing learnt about either
        single = [_score(c, code) for code in [h["uscc"] for h in hh[:3]] + UNREGISTERED[:2]]
        assert {(r.status_code, _error(r)) for r in single} == {(403, "no_relation")}
        assert len({r.json()["error"]["message"] for r in single}) == 1
        # the key's budget is min(40, half the platform's 60) = 30: 25 left after those 5
        items = _batch(c, [h["uscc"] for h in hh[3:43]])
        assert _item_codes(items) == ["no_relation"] * 25 + ["household_budget_exhausted"] * 15
        assert all("score" not in x and "status" not in x for x in items)
        # one budget for every path: a new household cannot be verified either
        r = c.post("/v1/verify", json={"uscc": hh[50]["uscc"]})
        assert (r.status_code, _error(r)) == (429, "household_budget_exhausted")
        assert int(r.headers["retry-after"]) > 0
    with _client(server, second) as c:
        assert (
            _item_codes(_batch(c, [h["uscc"] for h in hh[43:75]]))
            == ["no_relation"] * 30 + ["household_budget_exhausted"] * 2
        )
    with _client(server, third) as c:  # a fresh key of a platform that spent its 60
        r = _score(c, hh[76]["uscc"])
        assert (r.status_code, _error(r)) == (429, "platform_budget_exhausted")
    stop_server(server["proc"])
    server["proc"], server["url"] = _start(home, server["log"])
    with _client(server, walker) as c:  # the budget outlives the processes
        r = _score(c, hh[77]["uscc"])
        assert (r.status_code, _error(r)) == (429, "household_budget_exhausted")
    rows = AuditLog(home / "audit.sqlite").export_csv(None, "2000-01-01", walker_id)
    assert rows.count("no_relation") >= 5 + 1  # five single scores, one batch row
    assert "household_budget_exhausted" in rows


def test_onboarding_and_review_of_watched_merchants_meet_no_limit(server, households):
    home = server["home"]
    key_id, secret = _key(
        home, "shop", ["verify", "score", "batch", "watch"], daily_households=30, watch_cap=10_000
    )
    applicants = _take(households, 100, 20)
    with _client(server, secret) as c:
        for h in applicants:  # onboarding: verify the operator, then score
            assert _verify(c, h, h["operator_name"])["fields"]["operator_name"] == "match"
            r = _score(c, h["uscc"])
            assert r.status_code == 200 and r.json()["risk_class"] in "ABCD", r.text
        assert _watch(c, [h["uscc"] for h in applicants]) == ["watched"] * 20
    # the platform's existing merchants, watched on earlier days (more than its budget)
    merchants = [h["uscc"] for h in _take(households, 120, 300)]
    WatchStore(home / "watch.sqlite").watch("shop", key_id, merchants, SERVICE_AS_OF, (10**4,) * 2)
    with _client(server, secret) as c:
        reviewed = []
        for i in range(0, len(merchants), 100):
            reviewed += _batch(c, merchants[i : i + 100])
        assert [x["uscc"] for x in reviewed] == merchants
        assert all("error" not in x for x in reviewed)
        assert _watch(c, merchants[:50]) == ["watched"] * 50  # renewed by the watch list
        feed = c.get("/v1/changes")
        assert feed.status_code == 200, feed.text


def test_the_shops_name_alone_makes_no_relation(server, households):
    _, secret = _key(server["home"], "namer", ["verify", "score", "watch"])
    h, g = _take(households, 430, 2)
    with _client(server, secret) as c:
        assert _verify(c, h, name=h["name"])["fields"]["name"] == "match"
        assert (_score(c, h["uscc"]).status_code, _error(_score(c, h["uscc"]))) == (
            403,
            "no_relation",
        )
        assert _watch(c, [h["uscc"]]) == ["no_relation"]
        # a wrong operator with the right shop name: no relation either
        _verify(c, g, g["operator_name"] + "某", name=g["name"])
        assert _error(_score(c, g["uscc"])) == "no_relation"


def test_a_misbehaving_key_does_not_block_its_platforms_other_key(server, households):
    home = server["home"]
    _, rogue = _key(home, "twokeys", ["verify"])
    _, honest = _key(home, "twokeys", ["verify", "score"])
    targets = _take(households, 440, 12)
    with _client(server, rogue) as c:
        answered = []
        for h in targets:  # mismatches on many households: a key gets half of 20
            r = c.post("/v1/verify", json={"uscc": h["uscc"], "operator_name": "张三丰测试"})
            answered.append(r.status_code if r.status_code == 200 else _error(r))
        assert answered == [200] * 10 + ["key_guess_limit"] * 2
    with _client(server, honest) as c:
        for h in _take(households, 460, 3):  # applicants with a typo, then right
            assert _verify(c, h, h["operator_name"] + "某")["fields"]["operator_name"] == "mismatch"
            assert _verify(c, h, h["operator_name"])["fields"]["operator_name"] == "match"
            assert _score(c, h["uscc"]).status_code == 200


def test_a_newcomer_after_three_typos_is_answered_when_others_spent_the_pool(server, households):
    home = server["home"]
    (h,) = _take(households, 470, 1)
    yesterday = time.time() - 86400
    earlier = VerifyLimits(home / "limits.sqlite", clock=lambda: yesterday)
    asker = Asker("pool-a", "seeded", 10**6, 10**6)
    for _ in range(5):  # platform A's five reserved guesses, yesterday
        earlier.verify(Ask(asker, h["uscc"], ("operator_name",)), lambda: {"operator_name": False})
    for platform in ("pool-a", "pool-b"):
        _, secret = _key(home, platform, ["verify"])
        with _client(server, secret) as c:  # A spends the pool today, B its reserved five
            for _ in range(5):
                assert _verify(c, h, "欧阳锋测试")["fields"]["operator_name"] == "mismatch"
            r = c.post("/v1/verify", json={"uscc": h["uscc"], "operator_name": "x"})
            assert _error(r) == "verify_guess_limit"
    _, newcomer = _key(home, "newcomer", ["verify", "score"])
    with _client(server, newcomer) as c:
        for typo in ("某", "甲", "乙"):
            assert _verify(c, h, h["operator_name"] + typo)["fields"]["operator_name"] == "mismatch"
        assert _verify(c, h, h["operator_name"])["fields"]["operator_name"] == "match"
        assert _score(c, h["uscc"]).status_code == 200


def test_a_platforms_watches_are_capped_over_all_its_keys(server, households):
    home = server["home"]
    KeyStore(home / "keys.sqlite").set_platform("capped", watch_cap=2)
    hh = _take(households, 480, 3)
    answers = []
    for hs in (hh[:2], hh[2:]):
        _, secret = _key(home, "capped", ["verify", "watch"])
        with _client(server, secret) as c:
            for h in hs:
                _verify(c, h, h["operator_name"])
            answers += _watch(c, [h["uscc"] for h in hs])
    assert answers == ["watched", "watched", "platform_watch_cap_reached"]


# --- the feed: private to each platform, within the key's scopes ------------------------


def _read_all(c: httpx.Client, limit: int = 1) -> tuple[list[dict], list[str]]:
    events, cursors, after = [], [], ""
    while True:
        r = c.get("/v1/changes", params={"limit": limit, "after": after})
        assert r.status_code == 200, r.text
        events += r.json()["events"]
        after = r.json()["next"]
        cursors.append(after)
        if not r.json()["more"]:
            return events, cursors


def test_two_platforms_watching_one_household_learn_nothing_of_each_other(
    server, households, monkeypatch
):
    from credref.cli.refresh import derive_and_print_events
    from settings import load_settings

    home = server["home"]
    shared, a1, a2, b1 = _take(households, 500, 4)
    _, feed_a = _key(home, "feed-a", ["verify", "score", "watch"])
    _, watch_only = _key(home, "feed-a", ["watch"])
    _, feed_b = _key(home, "feed-b", ["verify", "score", "watch"])
    for secret, mine in ((feed_a, [shared, a1, a2]), (feed_b, [shared, b1])):
        with _client(server, secret) as c:
            for h in mine:
                _verify(c, h, h["operator_name"])
            assert _watch(c, [h["uscc"] for h in mine]) == ["watched"] * len(mine)
    con = sqlite3.connect(home / "watch.sqlite")
    with con:  # as if yesterday's answers had been these
        for code in (shared["uscc"], a1["uscc"], b1["uscc"]):
            con.execute(
                "UPDATE subject_state SET risk_class = "
                "CASE risk_class WHEN 'A' THEN 'D' WHEN 'B' THEN 'D' ELSE 'A' END, "
                "abnormal = 1 - abnormal WHERE subject = ?",
                (code,),
            )
        con.execute(
            "UPDATE subject_state SET status = 'suspended' WHERE subject = ?", (a2["uscc"],)
        )
        con.execute("DELETE FROM meta WHERE key = 'derived_for'")
    con.close()
    for k, v in service_env(home).items():
        monkeypatch.setitem(os.environ, k, v)
    derive_and_print_events(load_settings())
    with _client(server, feed_a) as c:  # one read: a household's events in one row
        seen_a, cursors_a = _read_all(c, limit=1000)
    with _client(server, feed_b) as c:
        seen_b, _ = _read_all(c)
        # another platform's cursor is not one issued to this one
        r = c.get("/v1/changes", params={"after": cursors_a[0]})
        assert (r.status_code, _error(r)) == (400, "invalid_cursor")
    # numbers of each platform's own, with no gap another platform's events could leave
    for seen in (seen_a, seen_b):
        assert [int(e["id"]) for e in seen] == list(range(1, len(seen) + 1))
    mine_a = {e["uscc"] for e in seen_a}
    assert mine_a == {shared["uscc"], a1["uscc"], a2["uscc"]}
    assert {e["uscc"] for e in seen_b} == {shared["uscc"], b1["uscc"]}
    # the shared household's events read the same from both: nothing says who else watches
    strip = lambda es: [{k: v for k, v in e.items() if k != "id"} for e in es]  # noqa: E731
    assert strip([e for e in seen_a if e["uscc"] == shared["uscc"]]) == strip(
        [e for e in seen_b if e["uscc"] == shared["uscc"]]
    )
    # a watch-only key reads what /v1/verify would tell: status changes, nothing more
    with _client(server, watch_only) as c:
        status_only, _ = _read_all(c)
    assert [e["kind"] for e in status_only] == ["status_changed"]
    assert status_only[0]["uscc"] == a2["uscc"]
    text = json.dumps(status_only)
    assert "reasons" not in text and "class" not in text
    # the household's query record lists every event each platform read about it
    about = AuditLog(home / "audit.sqlite").about(a1["uscc"])
    read = sorted(r["answer"] for r in about if r["endpoint"] == "GET /v1/changes")
    told = sorted(f"change-feed event: {e['kind']}" for e in seen_a if e["uscc"] == a1["uscc"])
    assert len(told) >= 2 and read == told


# --- a bounded, attributable audit; trusted proxies only ------------------------------------


def _audit(home) -> list[dict]:
    con = sqlite3.connect(home / "audit.sqlite")
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM audit ORDER BY seq")]
    con.close()
    return rows


def _head(home) -> int:
    rows = _audit(home)
    return rows[-1]["seq"] if rows else 0


def _counted_since(home, seq: int, total: int, timeout_s: float = 30) -> list[dict]:
    """The rows after ``seq`` once their refusal counts reach ``total`` (a window's
    flush is a timer in each worker)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = [r for r in _audit(home) if r["seq"] > seq]
        if sum(json.loads(r["outcome"]).get("count", 0) for r in rows) >= total:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"the refusal counts did not reach {total}")


def test_ten_thousand_requests_without_a_key_grow_the_audit_by_the_stated_bound(server):
    home = server["home"]
    last = _head(home)
    started = time.monotonic()
    n = 10_000
    with _client(server) as c:
        codes = {c.post("/v1/score", json={}).status_code for _ in range(n)}
    elapsed = time.monotonic() - started
    assert codes <= {401, 429}
    rows = _counted_since(home, last, n)
    # the bound: a row per (client, endpoint, code), window and worker
    windows = elapsed / WINDOW_S + 2
    assert len(rows) <= windows * WORKERS * 2, (len(rows), elapsed)
    assert sum(json.loads(r["outcome"])["count"] for r in rows) == n
    assert {r["client"] for r in rows} == {"127.0.0.1"} and {r["key_id"] for r in rows} == {None}
    assert AuditLog(home / "audit.sqlite").verify().ok


def test_a_rotating_forwarded_for_does_not_reset_the_failure_limiter(server):
    home = server["home"]
    last = _head(home)
    answers = []
    with _client(server, "crk_000000000000_not-a-key") as c:
        for i in range(60):
            r = c.post("/v1/score", json={}, headers={"X-Forwarded-For": f"10.9.{i}.{i}"})
            answers.append(_error(r))
    # each worker lets a burst of 10 through, then about 2.5 a second
    assert answers.count("too_many_failures") >= 30
    rows = _counted_since(home, last, 60)
    assert {r["client"] for r in rows} == {"127.0.0.1"}  # never a forwarded address


def test_every_answered_row_names_its_key_and_client(server, households):
    home = server["home"]
    key_id, secret = _key(home, "attributed", ["verify"])
    (h,) = _take(households, 520, 1)
    with _client(server, secret) as c:
        rid = c.post("/v1/verify", json={"uscc": h["uscc"]}).json()["request_id"]
    (row,) = [r for r in _audit(home) if r["request_id"] == rid]
    assert (row["key_id"], row["client"], row["platform"]) == (key_id, "127.0.0.1", "attributed")


# --- no 5xx and no echo from input ---------------------------------------------------------

LONE = "__lone_surrogate__"
#: Each JSON route with a valid body; every string in it is replaced in turn.
BODIES = {
    ("POST", "/v1/verify"): {
        "uscc": "U",
        "purpose": "onboarding",
        "name": "n",
        "operator_name": "o",
        "operator_id_number": "i",
        "address": "a",
    },
    ("POST", "/v1/score"): {"uscc": "U", "purpose": "onboarding"},
    ("POST", "/v1/score_batch"): {"usccs": ["U"], "purpose": "onboarding"},
    ("POST", "/v1/watch"): {"usccs": ["U"], "purpose": "merchant_monitoring"},
    ("DELETE", "/v1/watch"): {"usccs": ["U"]},
}


def _with_lone_surrogate(body: dict, field: str) -> bytes:
    """The body as JSON with the field's string (or its list's item) a lone surrogate."""
    value = body[field]
    changed = {**body, field: [LONE] if isinstance(value, list) else LONE}
    return json.dumps(changed).replace(f'"{LONE}"', '"\\ud800"').encode()


def test_lone_surrogates_in_every_string_field_of_every_route_answer_400(server, households):
    _, secret = _key(server["home"], "surrogates", ["verify", "score", "batch", "watch"])
    valid = households[0]["uscc"]
    tried = 0
    with _client(server, secret, **{"Content-Type": "application/json"}) as c:
        for (method, path), template in BODIES.items():
            body = {
                k: [valid] if v == ["U"] else valid if v == "U" else v for k, v in template.items()
            }
            for field in body:
                raw = _with_lone_surrogate(body, field)
                assert b"\\ud800" in raw
                r = c.request(method, path, content=raw)
                assert (r.status_code, _error(r)) == (400, "invalid_string"), (path, field)
                tried += 1
            r = c.request(method, path, content=b'{"\\ud800": 1}')  # as a field's name
            assert (r.status_code, _error(r)) == (400, "invalid_string"), path
        for path in ("/v1/watch", "/v1/changes"):  # the GET routes: in the query string
            r = c.get(f"{path}?after=%ED%A0%80")
            assert (r.status_code, _error(r)) == (400, "invalid_request"), path
    assert tried == 6 + 2 + 2 + 2 + 1
    assert "Traceback" not in server["log"].read_text(errors="replace")


def test_a_batch_names_a_refused_item_by_its_position_never_its_value(server, households):
    home = server["home"]
    _, secret = _key(home, "indexer", ["verify", "score", "batch", "watch"])
    h = households[540]
    id_number = "11010519491231002X"
    with _client(server, secret) as c:
        _verify(c, h, h["operator_name"])
        items = _batch(c, [id_number, h["uscc"], "张三"])
        watched = c.post(
            "/v1/watch", json={"usccs": [id_number, h["uscc"]], "purpose": "merchant_monitoring"}
        )
    assert [x["index"] for x in items] == [0, 1, 2]
    assert [x.get("uscc") for x in items] == [None, h["uscc"], None]
    assert _item_codes(items) == ["invalid_uscc", "scored", "invalid_uscc"]
    assert [(x["index"], x.get("uscc")) for x in watched.json()["results"]] == [
        (0, None),
        (1, h["uscc"]),
    ]
    for text in (json.dumps(items, ensure_ascii=False), watched.text):
        assert id_number not in text and "张三" not in text
    assert date.fromisoformat(items[1]["as_of"]) == SERVICE_AS_OF
