"""The credref command line: help everywhere, settings from the environment, clear errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from credref.cli.app import app
from settings import DEV_ID_HASH_SECRET, load_settings

runner = CliRunner()


def _commands(typer_app, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every command and sub-command registered on the typer app, walked, not typed."""
    out = []
    for cmd in typer_app.registered_commands:
        out.append(" ".join((*prefix, cmd.name or cmd.callback.__name__.replace("_", "-"))))
    for group in typer_app.registered_groups:
        out.append(" ".join((*prefix, group.name)))
        out.extend(_commands(group.typer_instance, (*prefix, group.name)))
    return out


COMMANDS = _commands(app)


def test_the_walk_finds_every_command():
    # a floor, so a broken walk cannot pass by finding nothing
    assert {"generate", "serve", "score-all", "audit anchor", "keys create"} <= set(COMMANDS)
    assert len(COMMANDS) >= 22


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command):
    args = ["--help"] if command is None else [*command.split(), "--help"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_generate_ingest_summary_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDREF_WAREHOUSE", str(tmp_path / "wh.duckdb"))
    monkeypatch.setenv("CREDREF_ID_HASH_SECRET", "cli-test-secret")
    out = tmp_path / "export"
    r = runner.invoke(
        app,
        [
            "generate",
            "--out",
            str(out),
            "--households",
            "3000",
            "--seed",
            "4",
            "--oracle-dates",
            "none",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "households" in r.output and "3,000" in r.output
    r = runner.invoke(app, ["ingest", str(out)])
    assert r.exit_code == 0, r.output
    assert "penalties" in r.output
    r = runner.invoke(app, ["summary"])
    assert r.exit_code == 0, r.output
    for city in ("Chengdu", "Shenzhen", "Xi'an"):
        assert city in r.output
    r = runner.invoke(app, ["ingest", str(out)])
    assert "already loaded" in r.output


def test_bad_input_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDREF_WAREHOUSE", str(tmp_path / "wh.duckdb"))
    r = runner.invoke(app, ["ingest", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "export folder not found" in r.output
    assert "warehouse was not changed" in r.output
    r = runner.invoke(app, ["summary"])
    assert r.exit_code == 2 and "no warehouse" in r.output
    r = runner.invoke(app, ["generate", "--out", str(tmp_path / "x"), "--end", "2026-09-31"])
    assert r.exit_code != 0 and "not a date" in r.output


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CREDREF_HOME", str(tmp_path))
    monkeypatch.delenv("CREDREF_WAREHOUSE", raising=False)
    monkeypatch.delenv("CREDREF_ID_HASH_SECRET", raising=False)
    s = load_settings()
    assert s.warehouse_path == tmp_path / "warehouse.duckdb"
    assert s.id_secret_bytes() == DEV_ID_HASH_SECRET.encode()
    assert DEV_ID_HASH_SECRET not in repr(s)  # the secret never prints
    monkeypatch.setenv("CREDREF_ID_HASH_SECRET", "s3")
    assert load_settings().id_secret_bytes() == b"s3"


def test_keys_and_audit_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDREF_HOME", str(tmp_path))
    r = runner.invoke(app, ["keys", "create", "--platform", "alipay", "--scopes", "verify,score"])
    assert r.exit_code == 0, r.output
    secret = r.output.strip().splitlines()[-1]
    assert secret.startswith("crk_")
    r = runner.invoke(app, ["keys", "list"])
    assert "alipay" in r.output and secret not in r.output
    key_id = secret.split("_")[1]
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    r = runner.invoke(app, ["keys", "revoke", key_id])
    assert r.exit_code == 2 and "no active key" in r.output
    r = runner.invoke(app, ["keys", "create", "--platform", "x", "--scopes", "root"])
    assert r.exit_code == 2 and "unknown" in r.output

    from serving.audit import AuditLog, AuditRecord

    log = AuditLog(tmp_path / "audit.sqlite")
    log.append(AuditRecord("r1", "/v1/verify", {"status": 401}, platform="alipay"))
    r = runner.invoke(app, ["audit", "verify"])
    assert r.exit_code == 0 and "chain intact" in r.output
    r = runner.invoke(app, ["audit", "export", "--platform", "alipay", "--since", "2020-01-01"])
    assert r.exit_code == 0 and "/v1/verify" in r.output
    import sqlite3

    with sqlite3.connect(tmp_path / "audit.sqlite") as con:
        con.execute("UPDATE audit SET endpoint = '/v1/score'")
    r = runner.invoke(app, ["audit", "verify"])
    assert r.exit_code == 1 and "edited" in r.output
