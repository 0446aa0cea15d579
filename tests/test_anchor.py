"""Signed audit checkpoints (serving.anchor): they hold on a log that grew, and fail on
every kind of tampering before the last checkpoint."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from credref.cli.app import app
from serving.anchor import (
    AnchorError,
    generate_key,
    load_public,
    prune,
    public_path,
    verify_anchored,
    write_anchor,
)
from serving.audit import GENESIS, AuditLog, AuditRecord, row_hash


def _record(i: int) -> AuditRecord:
    return AuditRecord(
        request_id=f"r{i}", endpoint="/v1/score", outcome={"http": 200}, platform="p"
    )


@pytest.fixture()
def anchored(tmp_path):
    """A log of 6 rows, checkpointed at row 4, then grown to 6."""
    log = AuditLog(tmp_path / "audit.sqlite")
    key = tmp_path / "keys" / "anchor.key"
    generate_key(key)
    for i in range(4):
        log.append(_record(i))
    write_anchor(log, key, tmp_path / "anchors")
    for i in range(4, 6):
        log.append(_record(i))
    return log, tmp_path / "anchors", load_public(public_path(key))


def _check(anchored):
    log, folder, public = anchored
    return verify_anchored(log, folder, public)


def test_a_log_that_grew_after_its_checkpoint_verifies(anchored):
    report = _check(anchored)
    assert report.ok, report.problems
    assert report.rows == 6


def test_an_edit_before_the_checkpoint_fails(anchored):
    with sqlite3.connect(anchored[0].path) as con:
        con.execute("UPDATE audit SET platform = 'other' WHERE seq = 2")
    assert any("row 2: content" in p for p in _check(anchored).problems)


def test_a_deletion_fails(anchored):
    with sqlite3.connect(anchored[0].path) as con:
        con.execute("DELETE FROM audit WHERE seq = 3")
    assert any("missing" in p for p in _check(anchored).problems)


def test_a_truncation_to_before_the_checkpoint_fails(anchored):
    with sqlite3.connect(anchored[0].path) as con:
        con.execute("DELETE FROM audit WHERE seq >= 4")
    log = anchored[0]
    assert log.verify().ok  # the chain alone sees nothing wrong
    assert any("checkpoint row 4 is gone" in p for p in _check(anchored).problems)


def test_a_rewritten_chain_fails_although_every_link_holds(anchored):
    """An insider rewrites rows 1-6 and recomputes every hash: a consistent chain."""
    log = anchored[0]
    with sqlite3.connect(log.path) as con:
        rows = con.execute(
            "SELECT seq, request_id, at, platform, endpoint, purpose, subject, outcome, "
            "model_version, latency_ms, key_id, client FROM audit ORDER BY seq"
        ).fetchall()
        prev = GENESIS
        for seq, *values in rows:
            values[2] = "someone-else"  # platform
            h = row_hash(prev, tuple(values))
            con.execute(
                "UPDATE audit SET platform = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (values[2], prev, h, seq),
            )
            prev = h
    assert log.verify().ok
    assert any("rewritten" in p for p in _check(anchored).problems)


def test_a_forged_or_altered_checkpoint_fails(anchored):
    _, folder, _ = anchored
    (path,) = folder.glob("checkpoint-*.json")
    doc = json.loads(path.read_text())
    doc["seq"] = 6
    path.write_text(json.dumps(doc))
    assert any("signature does not hold" in p for p in _check(anchored).problems)


def test_a_key_from_elsewhere_does_not_verify(anchored, tmp_path):
    other = tmp_path / "other.key"
    generate_key(other)
    log, folder, _ = anchored
    assert not verify_anchored(log, folder, load_public(other)).ok


def test_a_signing_key_is_never_overwritten_and_a_broken_chain_is_never_anchored(
    anchored, tmp_path
):
    key = tmp_path / "keys" / "anchor.key"
    with pytest.raises(AnchorError):
        generate_key(key)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    log = anchored[0]
    with sqlite3.connect(log.path) as con:
        con.execute("UPDATE audit SET platform = 'x' WHERE seq = 5")
    with pytest.raises(AnchorError):
        write_anchor(log, key, tmp_path / "anchors")


def test_the_cli_anchors_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDREF_HOME", str(tmp_path))
    monkeypatch.setenv("CREDREF_AUDIT_ANCHOR_KEY", str(tmp_path / "k" / "anchor.key"))
    monkeypatch.setenv("CREDREF_AUDIT_ANCHOR_DIR", str(tmp_path / "anchors"))
    log = AuditLog(tmp_path / "audit.sqlite")
    runner = CliRunner()
    assert runner.invoke(app, ["audit", "keygen"]).exit_code == 0
    log.append(_record(0))
    assert runner.invoke(app, ["audit", "anchor"]).exit_code == 0
    log.append(_record(1))
    ok = runner.invoke(app, ["audit", "verify", "--anchors", str(tmp_path / "anchors")])
    assert ok.exit_code == 0 and "every checkpoint holds" in ok.output
    with sqlite3.connect(log.path) as con:
        con.execute("DELETE FROM audit")
    bad = runner.invoke(app, ["audit", "verify", "--anchors", str(tmp_path / "anchors")])
    assert bad.exit_code == 1 and "gone" in bad.output


def test_the_service_side_writer_checkpoints_on_its_interval(tmp_path):
    import time

    from serving.anchor import start_periodic

    log = AuditLog(tmp_path / "audit.sqlite")
    key = tmp_path / "anchor.key"
    generate_key(key)
    log.append(_record(0))
    stop = start_periodic(log, key, tmp_path / "anchors", minutes=0.002)  # every 0.12 s
    try:
        deadline = time.monotonic() + 30
        while len(list((tmp_path / "anchors").glob("checkpoint-*.json"))) < 2:
            assert time.monotonic() < deadline, "no checkpoints written"
            time.sleep(0.05)
    finally:
        stop.set()
    log.append(_record(1))
    assert verify_anchored(log, tmp_path / "anchors", load_public(public_path(key))).ok


def _dated(i: int, at: str) -> AuditRecord:
    return AuditRecord(
        request_id=f"d{i}", endpoint="/v1/score", outcome={"http": 200}, platform="p", at=at
    )


@pytest.fixture()
def pruned(tmp_path):
    """Rows from 2022 and 2026; the 2022 rows pruned under a signed base."""
    log = AuditLog(tmp_path / "audit.sqlite")
    key = tmp_path / "keys" / "anchor.key"
    generate_key(key)
    for i in range(5):
        log.append(_dated(i, f"2022-0{i + 1}-01T00:00:00+00:00"))
    for i in range(5, 8):
        log.append(_dated(i, f"2026-0{i - 4}-01T00:00:00+00:00"))
    base, deleted = prune(log, key, tmp_path / "anchors", "2023-01-01T00:00:00+00:00")
    return log, key, tmp_path / "anchors", base, deleted


def test_pruning_keeps_the_rest_verifiable_from_a_signed_base(pruned):
    log, key, folder, base, deleted = pruned
    assert (base, deleted) == (5, 5)
    public = load_public(public_path(key))
    report = verify_anchored(log, folder, public)
    assert report.ok, report.problems
    assert report.rows == 3 and report.head_seq == 8
    log.append(_record(9))  # the chain goes on from the base
    assert verify_anchored(log, folder, public).ok
    assert [r for r in log.about("x")] == []  # queries still work on what is left


def test_a_pruned_log_whose_base_no_signature_vouches_for_fails(pruned):
    log, key, folder, *_ = pruned
    public = load_public(public_path(key))
    with sqlite3.connect(log.path) as con:  # an insider moves the base to hide a rewrite
        con.execute("UPDATE audit_base SET hash = ?", ("f" * 64,))
    report = verify_anchored(log, folder, public)
    assert not report.ok
    assert any("no signed checkpoint vouches" in p for p in report.problems)
    assert any("link to the previous row is broken" in p for p in report.problems)


def test_a_pruned_base_checkpoint_deleted_is_seen(pruned):
    log, key, folder, base, _ = pruned
    for f in folder.glob(f"checkpoint-{base:012d}-*.json"):
        f.unlink()
    write_anchor(log, key, folder)  # a later checkpoint alone does not vouch for the base
    report = verify_anchored(log, folder, load_public(public_path(key)))
    assert any("no signed checkpoint vouches" in p for p in report.problems)


def test_the_cli_prunes_by_the_retention_period(tmp_path, monkeypatch):
    home = tmp_path / "home"
    log = AuditLog(home / "audit.sqlite")
    for i in range(3):
        log.append(_dated(i, "2020-01-01T00:00:00+00:00"))
    log.append(_record(3))  # now
    key = tmp_path / "anchor.key"
    generate_key(key)
    monkeypatch.setenv("CREDREF_HOME", str(home))
    monkeypatch.setenv("CREDREF_AUDIT_ANCHOR_KEY", str(key))
    monkeypatch.setenv("CREDREF_AUDIT_ANCHOR_DIR", str(tmp_path / "anchors"))
    r = CliRunner().invoke(app, ["audit", "prune", "--older-than-days", "365"])
    assert r.exit_code == 0, r.output
    assert "3 rows older than 365 days deleted" in r.output
    r = CliRunner().invoke(app, ["audit", "verify", "--anchors", str(tmp_path / "anchors")])
    assert r.exit_code == 0, r.output
