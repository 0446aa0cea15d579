"""A real server (two workers) tried as an attacker would: malformed bodies of every
class, slow and lying bodies, websocket upgrades, random paths, metrics, guessing, and a
sweep of the log and the audit store for anything a request claimed."""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import string
import time

import duckdb
import httpx
import pytest
from stdnum.cn import uscc as s_uscc

from serving.audit import AuditLog
from serving.gateway import BEFORE_KEY, PURPOSES
from serving.keys import KeyStore
from tests.helpers import start_server, stop_server, wait_ready

pytestmark = pytest.mark.slow

#: Values an attacker sends; none may appear in the log or the audit store afterwards.
CLAIMED_ID = "11010519491231002X"
CLAIMED_NAME = "欧阳锋测试"
CLAIMED_ADDRESS = "白驼山庄一号院"
BODY_TIMEOUT_S = 1.5
WINDOW_S = 0.5  # refusals before a key are audited as counts per window (serving.tally)


def _start(home, log):
    proc, url = start_server(
        home,
        log,
        workers=2,
        CREDREF_RATE_LIMIT="100000",
        CREDREF_AUTH_FAILURE_LIMIT="100000",
        CREDREF_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        CREDREF_AUDIT_AGGREGATE_S=str(WINDOW_S),
    )
    wait_ready(url, proc, log)
    return proc, url


@pytest.fixture(scope="module")
def server(service_home, tmp_path_factory):
    store = KeyStore(service_home / "keys.sqlite")
    keys = {
        "all": store.create("hostile", ["verify", "score", "batch"])[1],
        "metrics": store.create("operator", ["metrics"])[1],
        "small": store.create("budgeted", ["verify"], daily_households=3)[1],
        "other": store.create("honest", ["verify"])[1],
    }
    folder = tmp_path_factory.mktemp("hostile")
    log = folder / "server.log"
    proc, url = _start(service_home, log)
    state = {"proc": proc, "url": url, "log": log, "home": service_home, "keys": keys}
    try:
        yield state
    finally:
        stop_server(state["proc"])


def _auth(server, key="all") -> dict:
    return {"Authorization": f"Bearer {server['keys'][key]}"}


def _audit_rows(home) -> int:
    return AuditLog(home / "audit.sqlite").verify().rows


def _audited(home, before: int, code: str) -> None:
    """A refusal is in the audit: its own row, or (refused before a key is read) a count
    in its client's row for the window, written when the window ends."""
    if code not in BEFORE_KEY:
        assert _audit_rows(home) == before + 1
        return
    deadline = time.monotonic() + 30
    con = sqlite3.connect(home / "audit.sqlite")
    try:
        while time.monotonic() < deadline:
            rows = con.execute("SELECT outcome FROM audit WHERE seq > ?", (before,)).fetchall()
            if any(json.loads(o).get("error") == code for (o,) in rows):
                return
            time.sleep(0.1)
    finally:
        con.close()
    raise AssertionError(f"no audit row counts the refusal {code}")


def _operating(home, n: int, offset: int = 0) -> list[dict]:
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    codes = [
        r[0]
        for r in snap.execute(
            "SELECT uscc FROM subjects WHERE status = 'operating' ORDER BY uscc LIMIT ? OFFSET ?",
            (n, offset),
        )
    ]
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT uscc, operator_name, address FROM households WHERE list_contains(?, uscc) ORDER BY uscc",
        [codes],
    ).fetchall()
    con.close()
    return [{"uscc": u, "operator_name": o, "address": a} for u, o, a in rows]


CODE = "92440300MA5DKQ0E2" + s_uscc.calc_check_digit("92440300MA5DKQ0E2")
JSON = {"Content-Type": "application/json"}
VALID = json.dumps({"uscc": CODE, "purpose": "onboarding"}).encode()

MALFORMED = [
    # (name, path, headers, body, status, code)
    (
        "form content type",
        "/v1/score",
        {"Content-Type": "application/x-www-form-urlencoded"},
        VALID,
        415,
        "unsupported_media_type",
    ),
    (
        "multipart",
        "/v1/score",
        {"Content-Type": "multipart/form-data; boundary=b"},
        b'--b\r\nContent-Disposition: form-data; name="uscc"\r\n\r\n'
        + CLAIMED_ID.encode()
        + b"\r\n--b--\r\n",
        415,
        "unsupported_media_type",
    ),
    ("no content type", "/v1/score", {}, VALID, 415, "unsupported_media_type"),
    (
        "gzip coding",
        "/v1/score",
        {**JSON, "Content-Encoding": "gzip"},
        VALID,
        415,
        "unsupported_media_type",
    ),
    (
        "utf-16",
        "/v1/verify",
        JSON,
        json.dumps({"uscc": CODE, "operator_id_number": CLAIMED_ID}).encode("utf-16"),
        400,
        "invalid_json",
    ),
    (
        "bom",
        "/v1/verify",
        JSON,
        b"\xef\xbb\xbf"
        + json.dumps({"uscc": CODE, "operator_name": CLAIMED_NAME}, ensure_ascii=False).encode(),
        400,
        "invalid_json",
    ),
    ("deep nesting", "/v1/score", JSON, b"[" * 50_000 + b"]" * 50_000, 400, "body_too_deep"),
    ("long number", "/v1/score", JSON, b'{"uscc": ' + b"9" * 10_000 + b"}", 400, "invalid_json"),
    (
        "unknown field",
        "/v1/score",
        JSON,
        json.dumps(
            {"uscc": CODE, "purpose": "onboarding", CLAIMED_NAME * 10_000: 1}, ensure_ascii=False
        ).encode(),
        400,
        "unknown_field",
    ),
    (
        "id number as uscc",
        "/v1/score",
        JSON,
        json.dumps({"uscc": CLAIMED_ID, "purpose": "onboarding"}).encode(),
        400,
        "invalid_request",
    ),
    (
        "free-text purpose",
        "/v1/score",
        JSON,
        json.dumps({"uscc": CODE, "purpose": CLAIMED_ADDRESS}, ensure_ascii=False).encode(),
        400,
        "invalid_request",
    ),
    ("oversized", "/v1/score", JSON, b'{"uscc": "' + b"9" * 300_000 + b'"}', 413, "body_too_large"),
    ("not an object", "/v1/score", JSON, b'"' + CLAIMED_ID.encode() + b'"', 400, "invalid_json"),
    ("unknown route", "/v1/" + CLAIMED_NAME + "/" + CLAIMED_ID, JSON, VALID, 404, "unknown_route"),
    ("index", "/", JSON, VALID, 404, "unknown_route"),
    ("huge header", "/v1/score", {**JSON, "X-Pad": "a" * 100_000}, VALID, 431, "headers_too_large"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_every_malformed_body_class_is_a_small_json_4xx_and_audited(server, case):
    _, path, headers, body, status, code = case
    before = _audit_rows(server["home"])
    r = httpx.post(
        server["url"] + path, content=body, headers={**headers, **_auth(server)}, timeout=30
    )
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == code
    assert len(r.content) < 2_000  # nothing of the body comes back
    assert CLAIMED_ID not in r.text and CLAIMED_NAME not in r.text
    _audited(server["home"], before, code)


def _raw(server, request: bytes, wait_s: float = 15.0) -> bytes:
    """Send raw bytes, read until the server closes or answers a whole response."""
    host, port = server["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as s:
        s.sendall(request)
        return _response(s)


def _response(s: socket.socket) -> bytes:
    """One whole HTTP response (headers and the body its length announces) from ``s``."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _head(path: str, server, extra: str = "") -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server['keys']['all']}\r\n"
        f"Content-Type: application/json\r\n{extra}"
    )


def test_a_body_slower_than_the_limit_gets_408_and_an_audit_row(server):
    before = _audit_rows(server["home"])
    started = time.monotonic()
    # Content-Length promises more than is ever sent: a slow body and a lying length.
    reply = _raw(
        server, (_head("/v1/score", server, "Content-Length: 200\r\n\r\n") + '{"uscc": ').encode()
    )
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_timeout"
    assert BODY_TIMEOUT_S <= time.monotonic() - started < 10
    assert _audit_rows(server["home"]) == before + 1


def test_a_content_length_shorter_than_the_body_is_a_json_400(server):
    """The gate reads what the length announced (a cut JSON text: 400, audited); the bytes
    after it are a second, malformed request, which the HTTP server answers itself in plain
    text and closes (SECURITY.md: what the server refuses before the application)."""
    before = _audit_rows(server["home"])
    host, port = server["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(_head("/v1/score", server, "Content-Length: 12\r\n\r\n").encode() + VALID[:12])
        first = _response(s)
        s.sendall(VALID[12:])
        second = _response(s)
    assert first.startswith(b"HTTP/1.1 400") and b'"invalid_json"' in first, first[:300]
    assert second.startswith(b"HTTP/1.1 400") and b"Invalid HTTP request" in second
    assert _audit_rows(server["home"]) == before + 1


def test_a_websocket_upgrade_is_refused_in_json_and_audited(server):
    before = _audit_rows(server["home"])
    reply = _raw(
        server,
        (
            b"GET /v1/score HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    )
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "websocket_not_supported"
    _audited(server["home"], before, "websocket_not_supported")


def _series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def test_metrics_need_a_key_and_stay_the_same_size_whatever_the_paths(server):
    url = server["url"]
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", headers=_auth(server)).status_code == 403
    rng = random.Random(1)

    def random_paths(n: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(n):
                path = "/" + "".join(rng.choices(string.ascii_letters, k=12)) + "/" + CLAIMED_ID
                c.get(path, headers=_auth(server) if i % 2 else {})

    random_paths(20)  # every label the unknown paths can take now exists
    httpx.get(f"{url}/metrics", headers=_auth(server, "metrics"))  # and the scrape's own
    before = httpx.get(f"{url}/metrics", headers=_auth(server, "metrics")).text
    random_paths(1_000)
    after = httpx.get(f"{url}/metrics", headers=_auth(server, "metrics")).text
    assert _series(after) == _series(before)
    assert CLAIMED_ID not in after
    for family in (
        "credref_answers_total",
        "credref_audit_commit_seconds",
        "credref_snapshot_age_days",
    ):
        assert family in after


def _claim(server, key: str, uscc: str, **fields) -> httpx.Response:
    # A new connection per request, so both workers answer some of them.
    return httpx.post(
        server["url"] + "/v1/verify",
        json={"uscc": uscc, **fields},
        headers=_auth(server, key),
        timeout=30,
    )


def test_guessing_is_cut_off_per_pair_across_workers_and_a_restart(server):
    (target,) = _operating(server["home"], 1, offset=100)
    for i in range(5):
        r = _claim(server, "all", target["uscc"], operator_name=f"{CLAIMED_NAME}{i}")
        assert r.status_code == 200 and r.json()["fields"]["operator_name"] == "mismatch"
    refused = _claim(server, "all", target["uscc"], operator_name=target["operator_name"])
    assert refused.status_code == 429, refused.text  # refused even for the right answer
    assert refused.json()["error"]["code"] == "verify_guess_limit"
    assert int(refused.headers["retry-after"]) > 0
    # another field of the same household, and another platform, are still answered
    assert (
        _claim(server, "all", target["uscc"], address=target["address"]).json()["fields"]["address"]
        == "match"
    )
    assert (
        _claim(server, "other", target["uscc"], operator_name=target["operator_name"]).status_code
        == 200
    )
    stop_server(server["proc"])
    server["proc"], server["url"] = _start(server["home"], server["log"])
    again = _claim(server, "all", target["uscc"], operator_name=target["operator_name"])
    assert again.status_code == 429 and again.json()["error"]["code"] == "verify_guess_limit"


def test_one_platform_spending_a_households_pool_leaves_another_its_own_guesses(server):
    (target,) = _operating(server["home"], 1, offset=200)
    answered = sum(
        _claim(server, "all", target["uscc"], address=f"{CLAIMED_ADDRESS}{i}").status_code == 200
        for i in range(8)
    )
    assert answered == 5  # the day's pair limit
    other = [_claim(server, "other", target["uscc"], address=f"x{i}").status_code for i in range(4)]
    assert other == [200, 200, 200, 200]  # 3 reserved + pool still holds (5 - 2 drawn)


def test_a_keys_daily_household_budget_holds(server):
    targets = _operating(server["home"], 4, offset=300)
    codes = [_claim(server, "small", t["uscc"]).status_code for t in targets]
    assert codes == [200, 200, 200, 429]
    assert _claim(server, "small", targets[0]["uscc"]).status_code == 200  # already counted


def test_honest_onboarding_never_meets_a_limit(server):
    with httpx.Client(base_url=server["url"], headers=_auth(server, "other"), timeout=30) as c:
        for t in _operating(server["home"], 300, offset=1000):
            r = c.post("/v1/verify", json=t)
            assert r.status_code == 200, r.text
            assert set(r.json()["fields"].values()) <= {"match", "not_provided"}


def test_no_claimed_value_reaches_the_log_or_the_audit_store(server):
    """Runs last in this module: after every hostile request above."""
    _claim(
        server,
        "all",
        CODE,
        operator_id_number=CLAIMED_ID,
        name=CLAIMED_NAME,
        address=CLAIMED_ADDRESS,
    )
    httpx.post(
        server["url"] + "/v1/score_batch",
        json={"usccs": [CLAIMED_ID, CLAIMED_NAME], "purpose": "onboarding"},
        headers=_auth(server),
    )
    text = server["log"].read_text(errors="replace")
    assert "Traceback" not in text
    store = (server["home"] / "audit.sqlite").read_bytes()
    wal = server["home"] / "audit.sqlite-wal"
    store += wal.read_bytes() if wal.exists() else b""
    for value in (CLAIMED_ID, CLAIMED_NAME, CLAIMED_ADDRESS):
        assert value not in text
        assert value.encode() not in store
    con = sqlite3.connect(server["home"] / "audit.sqlite")
    purposes = {r[0] for r in con.execute("SELECT DISTINCT purpose FROM audit")}
    assert purposes <= {None, *PURPOSES}  # the gate's closed list: never a claimed value
    subjects = [r[0] for r in con.execute("SELECT subject FROM audit WHERE subject IS NOT NULL")]
    assert all(part == "?" or s_uscc.is_valid(part) for s in subjects for part in s.split(";"))
