"""Benchmark: a real server tried as an attacker would, and as an honest platform would.

On the demo domain (a snapshot published from its warehouse into a bench home, the demo's
champion), against ``credref serve`` with two workers:

1. **Guessing attacks** on ``/v1/verify``: an operator name from its surname (2,612
   candidates, the right one among them) and an operator ID number from a birth date (160
   candidates with valid check digits), first by one platform, then by three platforms
   together. Measured: how many guesses are answered before the limits refuse; with the
   policy's year window (tested with a moving clock in tests/test_limits.py), the
   expected days to succeed.
2. **Honest onboarding**: 10,000 distinct households verified with their registered
   operator name and address: every answer 200 and ``match``, no limit met.
3. **Hostile bodies**: every malformed class (content types, encodings, depth, numbers,
   unknown fields, sizes, ID numbers as codes, random paths, websocket upgrades),
   repeated: answers by status class; 5xx must be 0.
4. **Leak sweep**: the server log and the audit store searched for every value sent.
5. **Minimum necessity on every path** (#25): a key walking the register through
   ``/v1/score_batch`` (100,000 codes it has no relation with); the honest platform
   scoring each applicant it verified, then reviewing every household of the domain as
   its watched merchants (about 100,000) through ``/v1/score_batch`` and reading its
   feed; a misbehaving key spending its platform's guesses while the platform's other key
   verifies; 10,000 requests without a key (the audit's growth); a rotating
   ``X-Forwarded-For`` against the failed-authentication limiter; lone surrogates in
   every string field of every route.

    python bench/hostile.py --warehouse var/demo/warehouse.duckdb --model-home var/demo
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sqlite3
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
from stdnum.cn import ric
from stdnum.cn import uscc as s_uscc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import publish_snapshot, service_env, verify_bodies
from measure import machine

from serving import launch
from serving.limits import expected_days

WINDOW_S = 10.0  # CREDREF_AUDIT_AGGREGATE_S for the run (60 s by default)


def _fake_code(i: int) -> str:
    """A valid household code that is probably not registered (a walker's guess)."""
    base = f"92110000MA{i:07d}"[:17]
    return base + s_uscc.calc_check_digit(base)


def _today(env: dict) -> date:
    return date.fromisoformat(env["CREDREF_TODAY"])


GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红梅鹏飞鑫波斌宇浩凯健俊帆帅旭宁龙林欢阳建国志文晨"


def name_candidates(true_name: str, n: int, rng: random.Random) -> list[str]:
    surname = true_name[0]
    pool = [surname + a + b for a in GIVEN for b in GIVEN] + [surname + a for a in GIVEN]
    pool = [c for c in dict.fromkeys(pool) if c != true_name][: n - 1]
    pool.insert(rng.randrange(n), true_name)
    return pool


def id_candidates(n: int) -> list[str]:
    """ID numbers of one birth date and district, each with its GB 11643 check digit."""
    bodies = [f"44030419850612{seq:03d}" for seq in range(n)]
    # stdnum's calc_check_digit takes the number *with* a check position (it drops it).
    return [b + ric.calc_check_digit(b + "0") for b in bodies]


def attack(url: str, keys: list[str], uscc: str, field: str, candidates: list[str]) -> dict:
    """Each platform guesses its share of the candidates in turn until refused."""
    answered, found, refusals = Counter(), False, Counter()
    started = time.monotonic()
    for i, key in enumerate(keys):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
            for guess in candidates[i :: len(keys)]:
                r = c.post("/v1/verify", json={"uscc": uscc, field: guess})
                if r.status_code != 200:
                    refusals[f"{r.status_code} {r.json()['error']['code']}"] += 1
                    break
                answered[i] += 1
                found = found or r.json()["fields"][field] == "match"
    return {
        "candidates": len(candidates),
        "platforms": len(keys),
        "answered_per_platform": [answered[i] for i in range(len(keys))],
        "answered_total": sum(answered.values()),
        "found": found,
        "refusals": dict(refusals),
        "seconds_to_cut_off": round(time.monotonic() - started, 2),
        "expected_days_at_the_limits": round(expected_days(len(candidates), len(keys)), 1),
    }


def honest(url: str, key: str, claims: list[dict]) -> dict:
    """Onboarding: each applicant verified, then scored (the relation the match makes)."""

    def share(part: list[dict]) -> list[tuple[int, bool]]:
        out = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
            for body in part:
                r = c.post("/v1/verify", json=body)
                fields = set(r.json().get("fields", {}).values())
                ok = r.status_code == 200 and fields <= {"match", "not_provided"}
                s = c.post("/v1/score", json={"uscc": body["uscc"], "purpose": "onboarding"})
                out.append((max(r.status_code, s.status_code), ok and s.status_code == 200))
        return out

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = [x for part in pool.map(share, [claims[i::4] for i in range(4)]) for x in part]
    return {
        "households": len(claims),
        "statuses": dict(Counter(str(s) for s, _ in results)),
        "all_match": all(ok for _, ok in results),
        "limits_hit": sum(s == 429 for s, _ in results),
        "seconds": round(time.monotonic() - started, 1),
    }


def malformed(code: str, claimed_id: str, name: str) -> list[tuple[str, dict, bytes]]:
    valid = json.dumps({"uscc": code, "purpose": "onboarding"}).encode()
    js = {"Content-Type": "application/json"}
    return [
        ("/v1/score", {"Content-Type": "application/x-www-form-urlencoded"}, valid),
        (
            "/v1/score",
            {"Content-Type": "multipart/form-data; boundary=b"},
            b"--b\r\n\r\n" + claimed_id.encode(),
        ),
        ("/v1/score", {}, valid),
        ("/v1/score", {**js, "Content-Encoding": "gzip"}, valid),
        (
            "/v1/verify",
            js,
            json.dumps({"uscc": code, "operator_id_number": claimed_id}).encode("utf-16"),
        ),
        (
            "/v1/verify",
            js,
            b"\xef\xbb\xbf"
            + json.dumps({"uscc": code, "operator_name": name}, ensure_ascii=False).encode(),
        ),
        ("/v1/score", js, b"[" * 50_000 + b"]" * 50_000),
        ("/v1/score", js, b'{"uscc": ' + b"9" * 10_000 + b"}"),
        (
            "/v1/score",
            js,
            json.dumps(
                {"uscc": code, "purpose": "onboarding", name * 5000: 1}, ensure_ascii=False
            ).encode(),
        ),
        ("/v1/score", js, json.dumps({"uscc": claimed_id, "purpose": "onboarding"}).encode()),
        ("/v1/score", js, json.dumps({"uscc": code, "purpose": name}, ensure_ascii=False).encode()),
        ("/v1/score", js, b'{"uscc": "' + b"9" * 300_000 + b'"}'),
        (
            "/v1/score_batch",
            js,
            json.dumps({"usccs": [claimed_id] * 1001, "purpose": "onboarding"}).encode(),
        ),
        (f"/v1/{name}/{claimed_id}", js, valid),
        ("/v1/score", js, b'{"uscc": "a", "uscc": "b"}'),
        ("/v1/score", js, b'{"uscc": NaN}'),
    ]


def websocket(url: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"GET /v1/score HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        return int(s.recv(4096).split(b" ", 2)[1])


def hostile_bodies(url: str, key: str, code: str, claimed_id: str, name: str, rounds: int) -> dict:
    statuses: Counter = Counter()
    codes: Counter = Counter()
    rng = random.Random(3)
    with httpx.Client(base_url=url, timeout=30) as c:
        for _ in range(rounds):
            for path, headers, body in malformed(code, claimed_id, name):
                r = c.post(
                    path, content=body, headers={**headers, "Authorization": f"Bearer {key}"}
                )
                statuses[f"{r.status_code // 100}xx"] += 1
                codes[r.json()["error"]["code"]] += 1
            for i in range(50):
                path = "/" + "".join(rng.choices("abcdefghij", k=10)) + "/" + claimed_id
                r = c.get(path, headers={"Authorization": f"Bearer {key}"} if i % 2 else {})
                statuses[f"{r.status_code // 100}xx"] += 1
                codes[r.json()["error"]["code"]] += 1
            statuses[f"{websocket(url) // 100}xx"] += 1
    return {
        "requests": sum(statuses.values()),
        "status_classes": dict(statuses),
        "codes": dict(codes),
    }


def _auth(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _items(c: httpx.Client, codes: list[str], counts: Counter) -> None:
    for i in range(0, len(codes), 1000):
        r = c.post(
            "/v1/score_batch", json={"usccs": codes[i : i + 1000], "purpose": "risk_reference"}
        )
        if r.status_code != 200:
            counts[f"batch {r.status_code} {r.json()['error']['code']}"] += 1
            continue
        for item in r.json()["results"]:
            counts[item["error"]["code"] if "error" in item else "answered"] += 1


def register_walk(url: str, key: str, codes: list[str]) -> dict:
    """One key asking about codes it has no relation with, 1,000 a batch."""
    counts: Counter = Counter()
    started = time.monotonic()
    with httpx.Client(base_url=url, headers=_auth(key), timeout=60) as c:
        _items(c, codes, counts)
    return {
        "codes": len(codes),
        "answers": dict(counts),
        "scored_or_status_told": counts["answered"],
        "seconds": round(time.monotonic() - started, 1),
    }


def review(url: str, key: str, codes: list[str]) -> dict:
    """The platform's watched merchants through /v1/score_batch, then its whole feed."""
    counts: Counter = Counter()
    started = time.monotonic()
    with httpx.Client(base_url=url, headers=_auth(key), timeout=60) as c:
        _items(c, codes, counts)
        seconds = time.monotonic() - started
        feed, after, pages = 0, "", 0
        while True:
            r = c.get("/v1/changes", params={"limit": 1000, "after": after})
            if r.status_code != 200:
                counts[f"feed {r.status_code}"] += 1
                break
            feed, after, pages = feed + len(r.json()["events"]), r.json()["next"], pages + 1
            if not r.json()["more"]:
                break
    return {
        "watched_merchants": len(codes),
        "answers": dict(counts),
        "limits_met": sum(v for k, v in counts.items() if k not in ("answered", "not_found")),
        "batch_seconds": round(seconds, 1),
        "feed_events_read": feed,
        "feed_pages": pages,
    }


def two_keys(url: str, rogue: str, good: str, targets: list[dict], applicants: list[dict]) -> dict:
    """A misbehaving key sends mismatches until refused; the platform's other key then
    verifies its applicants (a typo, then the right name) and scores them."""
    rogue_answers: Counter = Counter()
    with httpx.Client(base_url=url, headers=_auth(rogue)) as c:
        for t in targets:
            r = c.post("/v1/verify", json={"uscc": t["uscc"], "operator_name": "欧阳锋测试"})
            rogue_answers["mismatch" if r.status_code == 200 else r.json()["error"]["code"]] += 1
    good_answers: Counter = Counter()
    with httpx.Client(base_url=url, headers=_auth(good)) as c:
        for a in applicants:
            typo = {"uscc": a["uscc"], "operator_name": a["operator_name"] + "某"}
            for body in (typo, {"uscc": a["uscc"], "operator_name": a["operator_name"]}):
                r = c.post("/v1/verify", json=body)
                good_answers[
                    r.json()["fields"]["operator_name"]
                    if r.status_code == 200
                    else r.json()["error"]["code"]
                ] += 1
            s = c.post("/v1/score", json={"uscc": a["uscc"], "purpose": "onboarding"})
            good_answers[f"score {s.status_code}"] += 1
    return {"rogue_key": dict(rogue_answers), "other_key": dict(good_answers)}


def _audit_tail(home: Path, after: int) -> list[dict]:
    con = sqlite3.connect(home / "audit.sqlite")
    rows = con.execute(
        "SELECT outcome, client FROM audit WHERE seq > ? ORDER BY seq", (after,)
    ).fetchall()
    con.close()
    return [{**json.loads(o), "client": c} for o, c in rows]


def _head(home: Path) -> int:
    con = sqlite3.connect(home / "audit.sqlite")
    (head,) = con.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()
    con.close()
    return head


def _counts_reach(home: Path, after: int, total: int, timeout_s: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = _audit_tail(home, after)
        if sum(r.get("count", 0) for r in rows) >= total:
            return rows
        time.sleep(0.5)
    return _audit_tail(home, after)


def flood(url: str, home: Path, n: int, window_s: float) -> dict:
    """``n`` requests without a key: how many audit rows they add once counted."""
    head = _head(home)
    started = time.monotonic()
    with httpx.Client(base_url=url) as c:
        statuses = Counter(c.post("/v1/score", json={}).status_code for _ in range(n))
    seconds = time.monotonic() - started
    rows = _counts_reach(home, head, n)
    return {
        "requests": n,
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": round(seconds, 1),
        "audit_rows_added": len(rows),
        "requests_counted": sum(r.get("count", 0) for r in rows),
        "bound_rows": int((seconds / window_s + 2) * 2 * 5),
        "audit_bytes_per_request_before": 290,
    }


def rotating_forwarded_for(url: str, home: Path, n: int) -> dict:
    head = _head(home)
    with httpx.Client(base_url=url, headers=_auth("crk_000000000000_not-a-key")) as c:
        codes = Counter(
            c.post(
                "/v1/score", json={}, headers={"X-Forwarded-For": f"10.{i % 250}.{i // 250}.1"}
            ).json()["error"]["code"]
            for i in range(n)
        )
    rows = _counts_reach(home, head, n)
    return {
        "requests": n,
        "answers": dict(codes),
        "audited_client_addresses": sorted({r["client"] for r in rows}),
    }


SURROGATE_BODIES = {
    ("POST", "/v1/verify"): (
        "uscc",
        "purpose",
        "name",
        "operator_name",
        "operator_id_number",
        "address",
    ),
    ("POST", "/v1/score"): ("uscc", "purpose"),
    ("POST", "/v1/score_batch"): ("usccs", "purpose"),
    ("POST", "/v1/watch"): ("usccs", "purpose"),
    ("DELETE", "/v1/watch"): ("usccs",),
}


def surrogates(url: str, key: str, code: str) -> dict:
    """A lone surrogate in every string field of every route, and in the GET queries."""
    answers: Counter = Counter()
    with httpx.Client(
        base_url=url, headers={**_auth(key), "Content-Type": "application/json"}
    ) as c:
        for (method, path), fields in SURROGATE_BODIES.items():
            for field in fields:
                body = {
                    f: ([code] if f == "usccs" else code if f == "uscc" else "x") for f in fields
                }
                if "purpose" in body:
                    body["purpose"] = "merchant_monitoring" if path == "/v1/watch" else "onboarding"
                body[field] = ["\x00LONE"] if field == "usccs" else "\x00LONE"
                raw = json.dumps(body).replace('"\\u0000LONE"', '"\\ud800"')
                r = c.request(method, path, content=raw.encode())
                answers[f"{r.status_code} {r.json()['error']['code']}"] += 1
        for path in ("/v1/watch", "/v1/changes"):
            r = c.get(f"{path}?after=%ED%A0%80")
            answers[f"{r.status_code} {r.json()['error']['code']}"] += 1
    return {"sent": sum(answers.values()), "answers": dict(answers)}


def leaks(home: Path, log: Path, values: list[str]) -> dict:
    text = log.read_text(errors="replace")
    store = b"".join(p.read_bytes() for p in home.glob("audit.sqlite*"))
    found = [v for v in values if v in text or v.encode() in store]
    return {
        "values_searched": len(values),
        "found": len(found),
        "tracebacks_in_log": text.count("Traceback"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", type=Path, default=Path("var/demo/warehouse.duckdb"))
    ap.add_argument("--model-home", type=Path, default=Path("var/demo"))
    ap.add_argument("--home", type=Path, default=Path("bench/out/hostile"))
    ap.add_argument("--honest", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("bench/out/hostile.json"))
    args = ap.parse_args()

    home = args.home.resolve()
    for f in home.glob("*.sqlite*"):
        f.unlink()  # a fresh audit, key and limits store each run
    home.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    result["publish"] = publish_snapshot(
        args.warehouse.resolve(), home, b"credref-development-secret-not-for-production"
    )
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    operating = [r[0] for r in snap.execute("SELECT uscc FROM subjects WHERE status = 'operating'")]
    random.Random(0).shuffle(operating)
    # Households attacked: one per attack, so each attack starts from fresh limits.
    targets, population = operating[:4], operating[4 : 4 + args.honest]
    claims = verify_bodies(args.warehouse.resolve(), [*targets, *population])
    by_code = {c["uscc"]: c["operator_name"] for c in claims}
    honest_claims = [c for c in claims if c["uscc"] not in targets]

    env = {
        **service_env(home, args.model_home, launch.free_port()),
        "CREDREF_RATE_LIMIT": "100000",
        "CREDREF_AUDIT_AGGREGATE_S": str(WINDOW_S),
    }
    os.environ.update(env)
    from serving.keys import KeyStore

    store = KeyStore(home / "keys.sqlite")
    attackers = [store.create(f"attacker{i}", ["verify", "score", "batch"])[1] for i in range(3)]
    onboarding_key, onboarding = store.create("onboarding", ["verify", "score", "batch", "watch"])
    rogue = store.create("twokeys", ["verify"])[1]
    every_scope = store.create("surrogates", ["verify", "score", "batch", "watch"])[1]
    good = store.create("twokeys", ["verify", "score"])[1]
    everyone = [r[0] for r in snap.execute("SELECT uscc FROM subjects ORDER BY uscc")]
    url = f"http://127.0.0.1:{env['CREDREF_PORT']}"
    log = home / "service.log"
    proc = launch.start(env, log, workers=2)
    rng = random.Random(7)
    names = [name_candidates(by_code[t], 2612, rng) for t in targets[:2]]
    ids = id_candidates(160)
    try:
        launch.wait_ready(f"{url}/readyz", proc, log, timeout=300)
        plans = [
            ("attack_name_one_platform", attackers[:1], "operator_name", names[0]),
            ("attack_name_three_platforms", attackers, "operator_name", names[1]),
            ("attack_id_one_platform", attackers[:1], "operator_id_number", ids),
            ("attack_id_three_platforms", attackers, "operator_id_number", ids),
        ]
        for (name, keys, field, candidates), target in zip(plans, targets, strict=True):
            result[name] = attack(url, keys, target, field, candidates)
        result["honest_onboarding"] = honest(url, onboarding, honest_claims)
        result["hostile"] = hostile_bodies(
            url, attackers[0], targets[0], ids[0], by_code[targets[0]], args.rounds
        )
        # 5. minimum necessity on every path
        walk = [_fake_code(i) for i in range(50_000)] + everyone[:50_000]
        result["register_walk"] = register_walk(url, attackers[1], walk)
        from serving.watch import WatchStore

        # the platform's merchants: every household of the domain, watched on earlier days
        WatchStore(home / "watch.sqlite").watch(
            "onboarding", onboarding_key.key_id, everyone, _today(env), (10**6, 10**6)
        )
        result["review_watched_merchants"] = review(url, onboarding, everyone)
        rogue_targets = [{"uscc": u} for u in everyone[50_000 : 50_000 + 10_050]]
        result["two_keys_one_misbehaving"] = two_keys(
            url, rogue, good, rogue_targets, honest_claims[:100]
        )
        result["unauthenticated_flood"] = flood(url, home, 10_000, WINDOW_S)
        result["rotating_forwarded_for"] = rotating_forwarded_for(url, home, 500)
        result["lone_surrogates"] = surrogates(url, every_scope, targets[0])
    finally:
        launch.stop(proc)
    sent = [*names[0], *names[1], *ids, *(c["operator_name"] for c in honest_claims)]
    sent += [c["address"] for c in honest_claims]
    result["leaks"] = leaks(home, log, [v for v in sent if len(v) >= 2])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(
        json.dumps(
            {k: v for k, v in result.items() if k != "publish"}, indent=2, ensure_ascii=False
        )
    )


if __name__ == "__main__":
    main()
