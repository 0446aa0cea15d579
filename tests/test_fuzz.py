"""Schema fuzzing: schemathesis against a real server's own OpenAPI document.

Every generated request -- valid, and (negative mode) invalid -- must get no 5xx and a
response that conforms to the document (status code, content type, body schema); invalid
requests must be refused. One check is left out: a schema-valid code may still fail the
USCC check character, which JSON Schema cannot express, so a schema-valid request may
rightly get a 400.
A bounded example count here; ``bench/fuzz.py`` runs longer.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from serving.audit import AuditLog
from serving.keys import KeyStore
from tests.helpers import start_server, stop_server, wait_ready

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("CREDREF_FUZZ_EXAMPLES", "40"))  # bench/fuzz.py raises it


@pytest.fixture(scope="module")
def server(service_home, tmp_path_factory):
    _, key = KeyStore(service_home / "keys.sqlite").create(
        "fuzz", ["verify", "score", "score:pd", "batch", "watch"]
    )
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    # Limits high: schemathesis also replays requests without the key and expects a 401,
    # not the 429 that many failed authentications earn (tested in test_gateway.py).
    proc, url = start_server(
        service_home,
        log,
        workers=1,
        CREDREF_RATE_LIMIT="100000",
        CREDREF_AUTH_FAILURE_LIMIT="100000",
    )
    before = AuditLog(service_home / "audit.sqlite").verify().head_seq
    try:
        wait_ready(url, proc, log)
        yield url, {"Authorization": f"Bearer {key}"}
    finally:
        stop_server(proc)
    text = log.read_text(errors="replace")
    classes = _status_classes(service_home / "audit.sqlite", before)
    if os.environ.get("CREDREF_FUZZ_REPORT"):  # bench/fuzz.py records the run
        Path(os.environ["CREDREF_FUZZ_REPORT"]).write_text(
            json.dumps(
                {
                    "requests": sum(classes.values()),
                    "status_classes": classes,
                    "tracebacks_in_log": text.count("Traceback"),
                }
            )
        )
    assert "Traceback" not in text
    assert "5xx" not in classes, classes


def _status_classes(audit: Path, after_seq: int) -> dict[str, int]:
    """Requests the server audited during the run, by HTTP status class."""
    con = sqlite3.connect(audit)
    rows = con.execute("SELECT outcome FROM audit WHERE seq > ?", (after_seq,)).fetchall()
    con.close()
    out: dict[str, int] = {}
    for (outcome,) in rows:
        key = f"{json.loads(outcome)['http'] // 100}xx"
        out[key] = out.get(key, 0) + 1
    return out


def _operations(url: str, auth: dict):
    loaded = schemathesis.openapi.from_url(f"{url}/docs.json", headers=auth)
    ops = [r.ok() for r in loaded.include(path_regex="^/v1/").get_all_operations()]
    assert {(op.method.upper(), op.path) for op in ops} == {
        ("POST", "/v1/verify"),
        ("POST", "/v1/score"),
        ("POST", "/v1/score_batch"),
        ("POST", "/v1/watch"),
        ("DELETE", "/v1/watch"),
        ("GET", "/v1/watch"),
        ("GET", "/v1/changes"),
        ("GET", "/v1/score_guide"),
    }
    return ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_every_answer_conforms_to_the_document(server, mode):
    url, auth = server
    for op in _operations(url, auth):

        @given(case=op.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case):
            case.call_and_validate(
                base_url=url, headers=auth, excluded_checks=[positive_data_acceptance]
            )

        check()
