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
from pathlib import Path

import httpx
from stdnum.cn import ric

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import publish_snapshot, service_env, verify_bodies
from measure import machine

from serving import launch
from serving.limits import expected_days

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
    def share(part: list[dict]) -> list[tuple[int, bool]]:
        out = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
            for body in part:
                r = c.post("/v1/verify", json=body)
                fields = set(r.json().get("fields", {}).values())
                out.append(
                    (r.status_code, r.status_code == 200 and fields <= {"match", "not_provided"})
                )
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

    env = {**service_env(home, args.model_home, launch.free_port()), "CREDREF_RATE_LIMIT": "100000"}
    os.environ.update(env)
    from serving.keys import KeyStore

    store = KeyStore(home / "keys.sqlite")
    attackers = [store.create(f"attacker{i}", ["verify", "score", "batch"])[1] for i in range(3)]
    onboarding = store.create("onboarding", ["verify"])[1]
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
