"""Platform keys and the tamper-evident audit log (foundations of the service)."""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.audit import AuditLog, AuditRecord, AuditUnavailable, GroupWriter
from serving.keys import SCOPES, KeyRefused, KeyStore


@pytest.fixture()
def keys(state):
    return KeyStore(state("keys"))


def test_a_key_is_shown_once_and_stored_only_as_a_hash(keys):
    key, secret = keys.create("alipay", ["verify", "score"])
    assert secret.startswith(f"crk_{key.key_id}_") and len(secret) > 40
    with keys.place.connect() as con:
        stored = repr(con.execute("SELECT * FROM api_keys").fetchall())
    assert key.key_id in stored  # the row is there ...
    # the token after the prefix (itself may hold "_": base64url)
    token = secret.removeprefix(f"crk_{key.key_id}_")
    assert len(token) > 30
    assert secret not in stored and token not in stored  # ... the secret not
    if keys.path is not None:  # nor anywhere in the file
        raw = keys.path.read_bytes()
        assert secret.encode() not in raw and token.encode() not in raw
    got = keys.authenticate(secret)
    assert got is not None and got.platform == "alipay" and got.scopes == {"verify", "score"}


def test_unknown_malformed_and_revoked_keys_are_refused(keys):
    key, secret = keys.create("wechat", ["score"])
    assert keys.authenticate(None) is None
    assert keys.authenticate("") is None
    assert keys.authenticate("not-a-key") is None
    assert keys.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    keys.revoke(key.key_id)
    assert keys.authenticate(secret) is None  # at once
    assert not keys.list()[0].active
    with pytest.raises(KeyRefused, match="no active key"):
        keys.revoke(key.key_id)


def test_bad_scopes_and_platform_names_are_clear_errors(keys):
    with pytest.raises(KeyRefused, match="unknown: \\['admin'\\]"):
        keys.create("douyin", ["score", "admin"])
    with pytest.raises(KeyRefused, match="non-empty"):
        keys.create("douyin", [])
    with pytest.raises(KeyRefused, match="platform name"):
        keys.create("x'; DROP TABLE api_keys;--", ["score"])
    assert set(SCOPES) == {"verify", "score", "score:pd", "batch", "watch", "metrics"}
    with pytest.raises(KeyRefused, match="at least 1"):
        keys.create("douyin", ["verify"], daily_households=0)


def _record(i: int, platform: str = "alipay") -> AuditRecord:
    return AuditRecord(
        request_id=f"r{i}",
        endpoint="/v1/score",
        outcome={"status": 200, "class": "B"},
        platform=platform,
        purpose="onboarding",
        subject="92440304MA5DKQ0E7Q",
        model_version="3",
        latency_ms=1.5,
    )


def _edit(log: AuditLog, sql: str) -> None:
    """An insider's edit, straight on the store."""
    con = log.place.connect()
    try:
        con.execute(sql)
    finally:
        con.close()


@pytest.fixture()
def audit(state):
    log = AuditLog(state("audit"))
    for i in range(6):
        log.append(_record(i, "alipay" if i % 2 else "wechat"))
    return log


def test_an_intact_chain_verifies(audit):
    report = audit.verify()
    assert report.ok and report.rows == 6 and len(report.head_hash) == 64
    assert audit.verify(checkpoints=[(report.head_seq, report.head_hash)]).ok


def test_an_edited_row_is_detected(audit):
    _edit(audit, 'UPDATE audit SET outcome = \'{"status": 200, "class": "A"}\' WHERE seq = 3')
    problems = audit.verify().problems
    assert any("row 3: content does not match" in p for p in problems)


def test_a_deleted_row_is_detected(audit):
    _edit(audit, "DELETE FROM audit WHERE seq = 2")
    problems = audit.verify().problems
    assert any("rows 2..2 are missing" in p for p in problems)
    assert any("row 3: link" in p for p in problems)


def test_a_rewritten_chain_or_cut_tail_shows_against_the_anchored_head(audit):
    head = audit.verify()
    _edit(audit, "DELETE FROM audit WHERE seq = 6")
    assert audit.verify().ok  # the chain alone cannot see a cut tail...
    assert not audit.verify(checkpoints=[(head.head_seq, head.head_hash)]).ok  # ...the anchor can


def test_concurrent_writers_keep_one_linear_chain(state):
    log = AuditLog(state("audit"))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: AuditLog(state("audit")).append(_record(i)), range(80)))
    report = log.verify()
    assert report.ok and report.rows == 80


def test_export_is_per_platform_and_since(audit):
    text = audit.export_csv("alipay", "2000-01-01")
    lines = text.strip().splitlines()
    assert lines[0].startswith("seq,request_id,at,platform")
    assert len(lines) == 1 + 3 and all(",alipay," in line for line in lines[1:])
    assert audit.export_csv("alipay", "2999-01-01").strip().count("\n") == 0


def test_a_broken_or_locked_store_fails_closed(tmp_path):
    (tmp_path / "a-file").write_text("x")  # a file where the store's folder should be
    with pytest.raises(AuditUnavailable, match="cannot be opened"):
        AuditLog(tmp_path / "a-file" / "audit.sqlite")
    log = AuditLog(tmp_path / "audit.sqlite", timeout_s=0.2)
    log.append(_record(0))
    blocker = sqlite3.connect(tmp_path / "audit.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the store
    try:
        with pytest.raises(AuditUnavailable, match="cannot be written"):
            log.append(_record(1))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    (tmp_path / "audit.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"audit.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(AuditUnavailable, match="cannot be written"):
        log.append(_record(2))


def test_the_group_writer_commits_concurrent_rows_together_and_waits_out_a_short_lock(state):
    log = AuditLog(state("audit"), timeout_s=2.0)
    writer = GroupWriter(log)
    blocker = log.place.connect()

    async def scenario() -> tuple[list[str], list[str]]:
        first = await asyncio.gather(*(writer.submit(_record(i)) for i in range(50)))
        log.place.begin_write(
            blocker, 1.0
        )  # another worker's (or host's) writer holds the lock ...
        pending = [writer.submit(_record(100 + i)) for i in range(5)]
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in pending)  # ... nothing is answered meanwhile
        blocker.execute("ROLLBACK")  # ... and lets go well within timeout_s
        return first, await asyncio.gather(*pending)

    first, later = asyncio.run(scenario())
    report = log.verify()
    assert report.ok and report.rows == 55 and report.head_hash == later[-1]
    # rows submitted in one loop round share one transaction: one chain, in order
    ids = [r[0] for r in blocker.execute("SELECT request_id FROM audit ORDER BY seq").fetchall()]
    blocker.close()
    assert ids == [_record(i).request_id for i in [*range(50), *range(100, 105)]]
    assert len(set(first)) == 50


def test_the_group_writer_fails_closed_when_the_lock_is_held_too_long(state):
    log = AuditLog(state("audit"), timeout_s=0.2)
    writer = GroupWriter(log)
    blocker = log.place.connect()
    log.place.begin_write(blocker, 1.0)

    async def scenario() -> None:
        await asyncio.gather(*(writer.submit(_record(i)) for i in range(3)))

    try:
        with pytest.raises(AuditUnavailable, match="stayed locked"):
            asyncio.run(scenario())
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert log.verify().rows == 0
