"""The reference service in process (ASGI test client): every endpoint, scope, error and
audit rule, against a real published snapshot and a real MLflow champion."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import sqlite3
import unicodedata
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient
from stdnum.cn import uscc as s_uscc

from features.catalogue import FEATURE_NAMES, NO_ADVERSE, REASONS
from online_store.reader import describe_current
from serving.audit import AuditLog
from serving.keys import KeyStore
from serving.limits import VerifyLimits
from serving.preflight import Incompatible
from tests.conftest import KNOWN_ID, SERVICE_AS_OF
from tests.helpers import raw, where

REASON_OF = {r.code: r for r in (*REASONS, NO_ADVERSE)}

ALL = ["verify", "score", "score:pd", "batch"]
UNKNOWN = "92440300MA5DKQ0E2" + s_uscc.calc_check_digit(
    "92440300MA5DKQ0E2"
)  # valid, not registered


@pytest.fixture(scope="module")
def home(served_each_backend):
    return served_each_backend


@pytest.fixture(scope="module")
def service(home):
    import serving.service

    return importlib.reload(serving.service)


@pytest.fixture(scope="module")
def client(service):
    with TestClient(service.ReferenceService.to_asgi()) as c:
        yield c


@pytest.fixture(scope="module")
def keys(home):
    store = KeyStore(where("keys"))
    keys = {
        "all": store.create("alipay", ALL)[1],
        "score": store.create("wechat", ["verify", "score"])[1],
        "verify": store.create("douyin", ["verify"])[1],
    }
    # Every household is alipay's and wechat's merchant here (a verified operator): the
    # relation rule itself is tested against a real server (test_relation_server).
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    codes = [r[0] for r in con.execute("SELECT uscc FROM households").fetchall()]
    con.close()
    limits = VerifyLimits(where("limits"))
    for platform in ("alipay", "wechat"):
        limits.remember_matches(platform, [*codes, UNKNOWN])
    limits.close()
    return keys


def H(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def records(home):
    """Households as stored (warehouse) with their status on the as-of date (snapshot)."""
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    hh = con.execute("SELECT * FROM households ORDER BY uscc").df()
    con.close()
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    status = dict(snap.execute("SELECT uscc, status FROM subjects").fetchall())
    hh["status_on"] = hh.uscc.map(status)
    return hh


def _pick(records, **where) -> pd.Series:
    df = records
    for k, v in where.items():
        df = df[df[k] == v]
    return df.iloc[0]


def audit_rows(home) -> list[dict]:
    con = raw("audit")
    try:
        cur = con.execute("SELECT * FROM audit ORDER BY seq")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


# --- verify ---------------------------------------------------------------------------


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def test_verify_matches_claims_under_normalisation_and_never_returns_stored_values(
    client, keys, records
):
    from records.identity import id_hmac

    hh = _pick(records, operator_id_hmac=id_hmac(KNOWN_ID, b"test-secret"))
    claim = {
        "uscc": hh.uscc.lower()[:6] + " " + hh.uscc.lower()[6:],  # case and a space
        "name": _fullwidth(hh["name"]) if hh["name"] else None,
        "operator_name": " " + hh.operator_name + "\u3000",  # ideographic space
        "operator_id_number": _fullwidth(KNOWN_ID.lower()),
        "address": unicodedata.normalize("NFD", hh.address),
    }
    r = client.post(
        "/v1/verify", json={k: v for k, v in claim.items() if v}, headers=H(keys["verify"])
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["found"] and body["uscc"] == hh.uscc and body["as_of"] == str(SERVICE_AS_OF)
    assert body["status"] == hh.status_on
    expected_name = "match" if hh["name"] else "not_provided"
    assert body["fields"] == {
        "name": expected_name,
        "operator_name": "match",
        "operator_id_number": "match",
        "address": "match",
    }
    for stored in (hh.operator_name, hh.address, hh.operator_id_hmac, hh["name"]):
        assert not stored or stored not in r.text

    wrong = client.post(
        "/v1/verify",
        json={
            "uscc": hh.uscc,
            "operator_name": hh.operator_name + "X",
            "operator_id_number": "110105194912310038",
        },
        headers=H(keys["verify"]),
    ).json()
    assert wrong["fields"] == {
        "name": "not_provided",
        "operator_name": "mismatch",
        "operator_id_number": "mismatch",
        "address": "not_provided",
    }


def test_verify_reports_status_and_unknown_codes(client, keys, records):
    gone = _pick(records, status_on="revoked")
    body = client.post("/v1/verify", json={"uscc": gone.uscc}, headers=H(keys["verify"])).json()
    assert body["found"] and body["status"] == "revoked"
    unknown = UNKNOWN
    assert unknown not in set(records.uscc)
    body = client.post("/v1/verify", json={"uscc": unknown}, headers=H(keys["verify"])).json()
    assert body["found"] is False and "fields" not in body and "status" not in body


# --- score ----------------------------------------------------------------------------


def _snapshot_features(home, usccs) -> pd.DataFrame:
    """The published features of ``usccs`` (calendar-derived ones for its day)."""
    from online_store.reader import OnlineStore

    with OnlineStore(home / "online").current() as snap:
        frame = snap.frame().set_index("uscc")
    return frame.loc[list(usccs), list(FEATURE_NAMES)]


def test_score_equals_the_batch_scoring_function_and_hides_pd_without_its_scope(
    client, keys, records, home, service
):
    operating = records[records.status_on == "operating"].uscc.head(40).tolist()
    model = service.load_served_model(f"sqlite:///{home / 'mlflow.db'}", "credref-reference").model
    expected = model.score_frame(_snapshot_features(home, operating))
    for u in operating:
        r = client.post(
            "/v1/score", json={"uscc": u, "purpose": "onboarding"}, headers=H(keys["all"])
        )
        assert r.status_code == 200, r.text
        b = r.json()
        e = expected.loc[u]
        assert (b["score"], b["risk_class"]) == (int(e.score), e.risk_class)
        assert [x["code"] for x in b["reasons"]] == e.reasons.split(";")
        assert 1 <= len(b["reasons"]) <= 4 and all(
            x["text_zh"] and x["text_en"] for x in b["reasons"]
        )
        for x in b["reasons"]:  # what the household can do, as the catalogue says
            g = REASON_OF[x["code"]].guidance
            assert x["guidance"] == {
                "remedy": g.remedy,
                "text_zh": g.text_zh,
                "text_en": g.text_en,
                "source": g.source,
            }
        assert b["pd"] == pytest.approx(e.pd, abs=1e-6)
        assert b["model_version"] == "1" and b["as_of"] == str(SERVICE_AS_OF)
    no_pd = client.post(
        "/v1/score",
        json={"uscc": operating[0], "purpose": "periodic_review"},
        headers=H(keys["score"]),
    ).json()
    assert "pd" not in no_pd and no_pd["score"] == int(expected.iloc[0].score)


def test_a_household_not_operating_gets_its_status_and_no_score(client, keys, records):
    gone = _pick(records, status_on="deregistered")
    b = client.post(
        "/v1/score", json={"uscc": gone.uscc, "purpose": "onboarding"}, headers=H(keys["all"])
    ).json()
    assert b["status"] == "deregistered" and "score" not in b and "risk_class" not in b
    assert "not operating" in b["note"]


@pytest.mark.parametrize(
    "uscc, problem",
    [
        ("92440300MA5DKQ0E2", "wrong length"),
        ("92440300MA5DKQ0EIY", "charset"),
        ("92440300MA5DKQ0E2" + ("1" if UNKNOWN[-1] != "1" else "2"), "check character"),
        ("91440300MA5DKQ0E2X", None),  # a valid code, but of a company
    ],
)
def test_a_malformed_code_is_a_400_that_says_which_rule(client, keys, uscc, problem):
    from records.codes import uscc_problem

    problem = problem or "must start with 92"
    if uscc.startswith("91"):  # give it a valid check character first
        from stdnum.cn import uscc as s

        uscc = uscc[:-1] + s.calc_check_digit(uscc[:-1])
        assert uscc_problem(uscc) is None
    r = client.post(
        "/v1/score", json={"uscc": uscc, "purpose": "onboarding"}, headers=H(keys["all"])
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and problem in err["message"]
    assert err["details"][0]["field"] == "uscc"


def test_an_unknown_code_is_a_404(client, keys):
    r = client.post(
        "/v1/score", json={"uscc": UNKNOWN, "purpose": "onboarding"}, headers=H(keys["all"])
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_batch_answers_each_item_as_score_would(client, keys, records):
    operating = records[records.status_on == "operating"].uscc.head(5).tolist()
    gone = _pick(records, status_on="revoked").uscc
    items = [*operating, gone, UNKNOWN, "123", operating[0]]
    r = client.post(
        "/v1/score_batch",
        json={"usccs": items, "purpose": "periodic_review"},
        headers=H(keys["all"]),
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(items)
    for u, res in zip(operating, results, strict=False):
        single = client.post(
            "/v1/score", json={"uscc": u, "purpose": "periodic_review"}, headers=H(keys["all"])
        ).json()
        assert {k: res[k] for k in ("score", "risk_class", "reasons", "pd")} == {
            k: single[k] for k in ("score", "risk_class", "reasons", "pd")
        }
    assert results[5]["status"] == "revoked" and "score" not in results[5]
    assert results[6]["error"]["code"] == "not_found"
    assert (
        results[7]["error"]["code"] == "invalid_uscc" and "length" in results[7]["error"]["message"]
    )
    assert results[8]["score"] == results[0]["score"]


def test_every_answer_about_a_household_points_it_to_its_report_and_a_human_review(
    client, keys, records
):
    from urllib.parse import parse_qs, urlsplit

    from settings import load_settings

    base = load_settings().review_url
    op = records[records.status_on == "operating"].iloc[3]
    gone = _pick(records, status_on="revoked")
    for hh in (op, gone):  # a score, and a status without one: both are answers
        r = client.post(
            "/v1/score", json={"uscc": hh.uscc, "purpose": "onboarding"}, headers=H(keys["all"])
        ).json()
        assert r["review_url"].startswith(base)
        assert parse_qs(urlsplit(r["review_url"]).query) == {"ref": [r["request_id"]]}
        # the reference finds the audited answer; nothing of the household is in it
        assert hh.uscc not in r["review_url"] and hh.operator_name not in r["review_url"]
    b = client.post(
        "/v1/score_batch",
        json={"usccs": [op.uscc, UNKNOWN, gone.uscc], "purpose": "periodic_review"},
        headers=H(keys["all"]),
    ).json()
    urls = [x.get("review_url") for x in b["results"]]
    assert urls[1] is None  # no answer about a household: nothing to review
    for i in (0, 2):
        query = parse_qs(urlsplit(urls[i]).query)
        assert query == {"ref": [b["request_id"]], "item": [str(i)]}
    doc = client.get("/docs.json").json()
    assert "a reference, not a decision" in doc["info"]["description"]
    assert "review_url" in doc["info"]["description"]


def test_batch_needs_its_scope_and_a_limit_of_1000(client, keys, records):
    u = records.uscc.iloc[0]
    r = client.post(
        "/v1/score_batch", json={"usccs": [u], "purpose": "onboarding"}, headers=H(keys["score"])
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "scope_not_granted"
    r = client.post(
        "/v1/score_batch",
        json={"usccs": [u] * 1001, "purpose": "onboarding"},
        headers=H(keys["all"]),
    )
    assert r.status_code == 400 and "1000" in r.json()["error"]["message"]


# --- keys, scopes, request rules --------------------------------------------------------


def test_keys_and_scopes(client, keys, home, records):
    u = records.uscc.iloc[0]
    body = {"uscc": u, "purpose": "onboarding"}
    assert client.post("/v1/score", json=body).json()["error"]["code"] == "missing_key"
    r = client.post("/v1/score", json=body, headers=H("crk_000000000000_nope"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_key"
    r = client.post("/v1/score", json=body, headers=H(keys["verify"]))
    assert r.status_code == 403 and "score" in r.json()["error"]["message"]
    assert (
        client.post(
            "/v1/verify", json={"uscc": u}, headers={"X-API-Key": keys["verify"]}
        ).status_code
        == 200
    )
    store = KeyStore(where("keys"))
    key, secret = store.create("temp", ["verify"])
    assert client.post("/v1/verify", json={"uscc": u}, headers=H(secret)).status_code == 200
    store.revoke(key.key_id)
    r = client.post("/v1/verify", json={"uscc": u}, headers=H(secret))
    assert r.status_code == 401  # at once, no cache


def test_only_health_and_metrics_answer_without_a_key(client, keys):
    for path in ("/livez", "/readyz"):  # /metrics: in the real-server test (multiprocess)
        assert client.get(path).status_code == 200, path
    doc = client.get("/docs.json").json()  # without a key: it names no household
    assert {"/v1/verify", "/v1/score", "/v1/score_batch"} <= set(doc["paths"])
    info = doc["info"]  # credref's own, not BentoML's template
    assert info["title"] == "credref reference service" and "BentoML" not in json.dumps(info)
    assert info["version"] == importlib.metadata.version("credref")
    assert "not a decision" in info["description"]
    body = doc["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ScoreRequest"}
    assert not any(name.endswith("__Input") for name in doc["components"]["schemas"])
    text = json.dumps(doc)  # names and prose for platforms: no BentoML template, no modules
    assert "IODescriptor" not in text and "``" not in text and "serving." not in text
    assert not {"TaskStatusResponse", "InvalidArgument", "NotFound"} & set(
        doc["components"]["schemas"]
    )


@pytest.mark.parametrize(
    "content, code, status",
    [
        (b"{not json", "invalid_json", 400),
        (b"[1, 2]", "invalid_json", 400),
        (b'{"uscc": 42, "purpose": "onboarding"}', "invalid_request", 400),
        (b'{"uscc": "%s", "purpose": "marketing"}' % UNKNOWN.encode(), "invalid_request", 400),
        (
            b'{"uscc": "%s", "purpose": "onboarding", "x": 1}' % UNKNOWN.encode(),
            "unknown_field",
            400,
        ),
        (b'{"purpose": "onboarding", "pad": "' + b"a" * 300_000 + b'"}', "body_too_large", 413),
    ],
)
def test_bad_requests_get_a_json_error_and_an_audit_row(client, keys, home, content, code, status):
    before = len(audit_rows(home))
    r = client.post(
        "/v1/score", content=content, headers={**H(keys["all"]), "Content-Type": "application/json"}
    )
    assert r.status_code == status and r.json()["error"]["code"] == code
    rows = audit_rows(home)
    assert len(rows) == before + 1
    assert json.loads(rows[-1]["outcome"]) == {"http": status, "error": code}
    assert rows[-1]["request_id"] == r.json()["request_id"] == r.headers["x-request-id"]
    assert rows[-1]["platform"] == "alipay"


def test_get_is_refused(client, keys):
    r = client.get("/v1/score", headers=H(keys["all"]))
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"  # what HTTP asks a 405 to say
    w = client.put("/v1/watch", headers=H(keys["all"]))
    assert w.status_code == 405 and w.headers["allow"] == "DELETE, GET, POST"


# --- audit ------------------------------------------------------------------------------


def test_every_request_is_audited_with_its_outcome_and_the_chain_verifies(
    client, keys, home, records
):
    op = records[records.status_on == "operating"].iloc[3]
    before = len(audit_rows(home))
    a = client.post(
        "/v1/score", json={"uscc": op.uscc, "purpose": "risk_reference"}, headers=H(keys["all"])
    )
    b = client.post("/v1/score", json={"uscc": op.uscc, "purpose": "onboarding"})
    c = client.post(
        "/v1/verify", json={"uscc": op.uscc, "operator_name": "某人"}, headers=H(keys["verify"])
    )
    rows = audit_rows(home)[before:]
    # the refusal without a key is counted per client and window, not a row of its own
    # (serving.tally; its bound is tested on a real server)
    assert [r["request_id"] for r in rows] == [x.json()["request_id"] for x in (a, c)]
    assert json.loads(b.content)["error"]["code"] == "missing_key"
    ra, rc = rows
    keys_by_platform = {k.platform: k.key_id for k in KeyStore(where("keys")).list()}
    assert (ra["key_id"], rc["key_id"]) == (keys_by_platform["alipay"], keys_by_platform["douyin"])
    assert ra["client"] == rc["client"] == "testclient"  # Starlette's test client's address
    assert (ra["platform"], ra["endpoint"], ra["purpose"], ra["subject"]) == (
        "alipay",
        "/v1/score",
        "risk_reference",
        op.uscc,
    )
    assert json.loads(ra["outcome"]) == {
        "http": 200,
        "status": "operating",
        "class": a.json()["risk_class"],
        "score": a.json()["score"],
        "reasons": ";".join(r["code"] for r in a.json()["reasons"]),
        "objected": "",  # the reasons it marked under objection: none
        "publication": describe_current(home / "online")["publication"],
    }
    assert ra["model_version"] == "1" and ra["latency_ms"] > 0
    assert json.loads(rc["outcome"])["fields"]["operator_name"] == "mismatch"
    # reason codes (for replay), never their texts; never a claimed value
    assert "text_en" not in ra["outcome"] and "某人" not in json.dumps(rows, ensure_ascii=False)
    report = AuditLog(where("audit")).verify()
    assert report.ok and report.rows == len(audit_rows(home))


def test_a_households_query_record_lists_who_asked_why_and_what_kind_of_answer(
    client, keys, home, records
):
    from serving.audit import AuditLog

    op = records[records.status_on == "operating"].iloc[7]
    other = records[records.status_on == "operating"].iloc[8]
    since = AuditLog(where("audit")).about(op.uscc)
    claim = {"uscc": op.uscc, "purpose": "onboarding", "operator_name": op.operator_name}
    client.post("/v1/verify", json=claim, headers=H(keys["verify"]))
    s = client.post(
        "/v1/score", json={"uscc": op.uscc, "purpose": "risk_reference"}, headers=H(keys["all"])
    ).json()
    client.post(
        "/v1/score_batch",
        json={"usccs": [other.uscc, op.uscc], "purpose": "periodic_review"},
        headers=H(keys["all"]),
    )
    client.post(
        "/v1/score", json={"uscc": other.uscc, "purpose": "onboarding"}, headers=H(keys["score"])
    )
    rows = AuditLog(where("audit")).about(op.uscc)[len(since) :]
    assert [(r["platform"], r["endpoint"], r["purpose"]) for r in rows] == [
        ("douyin", "/v1/verify", "onboarding"),
        ("alipay", "/v1/score", "risk_reference"),
        ("alipay", "/v1/score_batch", "periodic_review"),
    ]  # wechat asked about another household only
    codes = ";".join(x["code"] for x in s["reasons"])
    assert [r["answer"] for r in rows] == [
        "verification: status operating; operator_name match",
        f"score: class {s['risk_class']}, reasons {codes}",
        f"batch item: {s['risk_class']}",
    ]
    assert op.operator_name not in json.dumps(rows, ensure_ascii=False)  # never a claim


def test_the_request_fails_closed_when_the_audit_store_cannot_be_written(
    client, keys, home, records
):
    u = records.uscc.iloc[0]
    log = AuditLog(where("audit"))
    lock = log.place.connect()
    log.place.begin_write(lock, 1.0)  # another writer holds the store past the wait
    try:
        before = lock.execute("SELECT count(*) FROM audit").fetchone()[0]
        r = client.post(
            "/v1/score", json={"uscc": u, "purpose": "onboarding"}, headers=H(keys["all"])
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
        assert r.headers["retry-after"] == "5"
        assert "score" not in r.json()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    after = len(audit_rows(home))
    assert after == before  # nothing answered, nothing written
    r = client.post("/v1/score", json={"uscc": u, "purpose": "onboarding"}, headers=H(keys["all"]))
    assert r.status_code in (200, 404) and len(audit_rows(home)) == after + 1


# --- snapshots and the model -------------------------------------------------------------


def test_a_new_publication_is_picked_up_and_an_incompatible_one_refused(
    client, keys, home, service, records
):
    from datetime import date

    from online_store.publish import publish

    u = records[records.status_on == "operating"].uscc.iloc[0]
    original = os.readlink(home / "online" / "current")
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    publish(con, date(2026, 7, 31), home / "online", b"test-secret")
    con.close()
    r = client.post("/v1/score", json={"uscc": u, "purpose": "onboarding"}, headers=H(keys["all"]))
    assert r.json()["as_of"] == "2026-07-31"

    current = home / "online" / "current"
    target = os.readlink(current)
    bad = home / "online" / "snap-9999-bad.sqlite"
    bad.write_bytes((home / "online" / target).read_bytes())
    db = sqlite3.connect(bad)
    db.execute("UPDATE meta SET value = 'other' WHERE key = 'catalogue_version'")
    db.commit()
    db.close()
    os.remove(current)
    os.symlink(bad.name, current)
    try:
        with pytest.raises(Incompatible, match="catalogue"):
            service.ReferenceService()
        assert client.get("/readyz").status_code == 503
    finally:
        os.remove(current)
        os.symlink(original, current)  # back to the module's snapshot for the tests after
    assert client.get("/readyz").status_code == 200


def test_no_response_or_audit_row_holds_stored_personal_information(client, keys, home, records):
    sample = records.head(30)
    bodies = []
    for _, hh in sample.iterrows():
        for path, body in (
            (
                "/v1/verify",
                {"uscc": hh.uscc, "operator_name": hh.operator_name, "address": hh.address},
            ),
            ("/v1/score", {"uscc": hh.uscc, "purpose": "onboarding"}),
        ):
            bodies.append(client.post(path, json=body, headers=H(keys["all"])).text)
    bodies.append(
        client.post(
            "/v1/score_batch",
            json={"usccs": sample.uscc.tolist(), "purpose": "onboarding"},
            headers=H(keys["all"]),
        ).text
    )
    audit = json.dumps(audit_rows(home), ensure_ascii=False)
    secrets_ = [
        *sample.operator_name,
        *sample.address,
        *sample.operator_id_hmac,
        *sample["name"].dropna(),
        KNOWN_ID,
    ]
    for text in [*bodies, audit]:
        for s in secrets_:
            assert s not in text
    for k in keys.values():
        assert k not in audit


def test_the_scoring_path_equals_the_numpy_path_on_every_operating_household(home, service):
    served = service.load_served_model(f"sqlite:///{home / 'mlflow.db'}", "credref-reference")
    snap = service.OnlineStore(home / "online").current()
    con = sqlite3.connect(f"file:{snap.path}?mode=ro", uri=True)
    usccs = [r[0] for r in con.execute("SELECT uscc FROM subjects WHERE status = 'operating'")]
    frame = _snapshot_features(home, usccs[:500])
    a = served.model.score_frame(frame)
    from scoring.model import encode_row

    rows = np.asarray([encode_row(snap.get(u).features) for u in usccs[:500]])
    b = served.model.score_array(rows)
    assert np.array_equal(a.score.to_numpy(), b["score"]) and list(a.reasons) == [
        ";".join(r) for r in b["reasons"]
    ]


def test_score_all_gives_every_household_the_service_answer(client, keys, home, service, tmp_path):
    from scoring.batch import score_all_duckdb

    served = service.load_served_model(f"sqlite:///{home / 'mlflow.db'}", "credref-reference")
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    manifest = score_all_duckdb(
        con, SERVICE_AS_OF, served.model, served.version, served.tag, tmp_path, progress=False
    )
    con.close()
    scores = pd.read_parquet(tmp_path / "scores.parquet").set_index("uscc")
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    operating = [r[0] for r in snap.execute("SELECT uscc FROM subjects WHERE status = 'operating'")]
    assert manifest["rows"] == len(scores) == len(operating)
    assert manifest["model_version"] == "1" and manifest["as_of"] == str(SERVICE_AS_OF)
    sample = scores.sample(60, random_state=1)
    answers = client.post(
        "/v1/score_batch",
        json={"usccs": sample.index.tolist(), "purpose": "periodic_review"},
        headers=H(keys["all"]),
    ).json()["results"]
    for (uscc, row), a in zip(sample.iterrows(), answers, strict=True):
        assert a["uscc"] == uscc
        assert (a["score"], a["risk_class"]) == (row.score, row.risk_class)
        assert [r["code"] for r in a["reasons"]] == row.reasons.split(";")
        assert a["pd"] == pytest.approx(row.pd, abs=1e-6)


HOSTILE_CLAIMS = [
    "王伟😀",  # emoji
    "Ｗａｎｇ Ｗｅｉ",  # full-width
    "e\u0301\u0301\u0301",  # stacked combining marks
    "'; DROP TABLE subjects; --",  # SQL-looking
    "\u202eevil",  # right-to-left override
    "\x00null",  # a NUL
]


@pytest.mark.parametrize("claim", HOSTILE_CLAIMS)
def test_hostile_claims_are_compared_not_executed_and_never_echoed(
    client, keys, records, home, claim
):
    # One household per claim: each claim is three mismatches, and the guessing limits
    # (tested on their own) would refuse a sixth on the same household.
    hh = records[records.status_on == "operating"].iloc[10 + HOSTILE_CLAIMS.index(claim)]
    r = client.post(
        "/v1/verify",
        json={"uscc": hh.uscc, "name": claim, "operator_name": claim, "address": claim},
        headers=H(keys["verify"]),
    )
    assert r.status_code == 200, r.text
    assert set(r.json()["fields"].values()) == {"mismatch", "not_provided"}
    assert claim not in r.text
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    assert snap.execute("SELECT count(*) FROM subjects").fetchone()[0] > 0  # still there


@pytest.mark.parametrize(
    "body, field",
    [
        ({"uscc": "'; DROP TABLE subjects; --", "purpose": "onboarding"}, "uscc"),
        ({"uscc": "９２４４０３００ＭＡ５ＤＫＱ０Ｅ２Ｙ", "purpose": "onboarding"}, "uscc"),
        ({"uscc": ["92440300MA5DKQ0E2Y"], "purpose": "onboarding"}, "uscc"),
        ({"uscc": None, "purpose": "onboarding"}, "uscc"),
        ({"purpose": "onboarding"}, "uscc"),
        ({"uscc": UNKNOWN, "purpose": 3}, "purpose"),
    ],
)
def test_wrong_types_and_hostile_codes_are_400s_naming_the_field(client, keys, body, field):
    r = client.post("/v1/score", json=body, headers=H(keys["all"]))
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["details"][0]["field"] == field
    assert "DROP" not in r.text


def test_the_api_document_has_a_page_served_from_the_pinned_bundle_and_is_not_audited(
    client, service_home
):
    def audited() -> int:
        con = raw("audit")
        try:
            return con.execute("SELECT count(*) FROM audit").fetchone()[0]
        finally:
            con.close()

    before = audited()
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/docs/[^"]+)"', page.text)
    assert len(assets) == 5 and "<script>" not in page.text  # no inline script, no CDN
    for path in assets:
        r = client.get(path)
        assert r.status_code == 200 and len(r.content) > 100, path
    assert "SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js").text
    assert client.get("/docs/..%2Fkeys.sqlite").status_code == 404  # no path outside the list
    assert client.get("/docs/index.html").status_code == 404  # only the files the page uses
    refused = client.post("/docs")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    assert audited() == before


def test_each_operation_documents_the_errors_it_can_give_with_examples(client):
    from serving.gateway import ROUTES
    from serving.openapi import CODES, GATE, ROUTE_CODES

    doc = client.get("/docs.json").json()
    assert set(ROUTE_CODES) == {(m.lower(), p) for m, p in ROUTES}
    for (method, path), own in ROUTE_CODES.items():
        responses = doc["paths"][path][method]["responses"]
        listed = {
            code
            for status, r in responses.items()
            if status != "200"
            for code in r["content"]["application/json"]["examples"]
        }
        assert listed == set(GATE) | set(own), (method, path)
        for code in listed:
            example = responses[str(CODES[code][0])]["content"]["application/json"]
            assert example["examples"][code]["value"]["error"]["code"] == code
    changes, score = doc["paths"]["/v1/changes"]["get"], doc["paths"]["/v1/score"]["post"]
    assert "410" in changes["responses"] and "410" not in score["responses"]
    assert "404" in score["responses"] and "404" not in changes["responses"]
    # every code documented is one the service gives (no stale entry)
    serving = Path(__file__).resolve().parent.parent / "serving"
    source = "".join(p.read_text() for p in serving.glob("*.py") if p.name != "openapi.py")
    for code in CODES:
        assert f'"{code}"' in source, code


def test_every_request_example_in_the_document_is_answered_as_the_document_says(client, keys):
    doc = client.get("/docs.json").json()
    sent = 0
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "")
            schema = doc["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
            for example in schema.get("examples", []):
                r = client.request(method.upper(), path, json=example, headers=H(keys["all"]))
                assert r.status_code != 400, (method, path, r.text)  # the example is valid
                assert str(r.status_code) in op["responses"], (method, path, r.text)
                if r.status_code != 200:  # a refusal the operation documents, by its code
                    code = r.json()["error"]["code"]
                    listed = op["responses"][str(r.status_code)]["content"]["application/json"]
                    assert code in listed["examples"], (method, path, code)
                sent += 1
    assert sent == 5  # verify, score, batch, watch, unwatch
