"""``credref keys ...`` and ``credref audit ...``: the operator's commands for platform
keys and the audit log (registered on the main app by :mod:`credref.cli.app`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table as RichTable
from stdnum.cn import uscc as s_uscc

from credref.cli.common import console, fail, parse_date
from online_store.replay import ReplayError, replay
from serving import anchor
from serving.anchor import AnchorError
from serving.audit import AuditLog, AuditUnavailable
from serving.keys import KeyRefused, KeyStore
from serving.state import located
from settings import load_settings

keys_app = typer.Typer(help="Platform API keys (stored only as hashes).", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    platform: Annotated[str, typer.Option(help="Platform name, e.g. alipay.")],
    scopes: Annotated[
        str,
        typer.Option(help="Comma-separated: verify,score[,score:pd,batch,watch,metrics]."),
    ],
    daily_households: Annotated[
        int,
        typer.Option(help="Distinct households this key may verify per day (serving.limits)."),
    ] = 20_000,
    watch_cap: Annotated[
        int, typer.Option(help="Households this key may watch at once (serving.watch).")
    ] = 100_000,
) -> None:
    """Create a key; the secret is printed once and never stored."""

    try:
        key, secret = KeyStore(located(load_settings(), "keys")).create(
            platform, [s.strip() for s in scopes.split(",")], daily_households, watch_cap
        )
    except KeyRefused as e:
        fail(str(e))
    console.print(
        f"key {key.key_id} for {key.platform} ({','.join(sorted(key.scopes))}, "
        f"{key.daily_households:,} households a day, {key.watch_cap:,} watches); keep it "
        "now, it is not shown again:"
    )
    print(secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (ids, platforms, scopes, budgets, state; never secrets)."""

    table = RichTable(title="platform keys")
    for col in ("key id", "platform", "scopes", "households/day", "watches", "created", "revoked"):
        table.add_column(col)
    for k in KeyStore(located(load_settings(), "keys")).list():
        table.add_row(
            k.key_id,
            k.platform,
            ",".join(sorted(k.scopes)),
            f"{k.daily_households:,}",
            f"{k.watch_cap:,}",
            k.created_at,
            k.revoked_at or "",
        )
    console.print(table)


@keys_app.command("platform")
def keys_platform(
    platform: Annotated[str, typer.Argument(help="Platform name, e.g. alipay.")],
    daily_households: Annotated[
        int | None,
        typer.Option(
            help="Distinct households the platform may ask about per day, over all its keys "
            "and every route (a key gets at most half: serving.limits)."
        ),
    ] = None,
    watch_cap: Annotated[
        int | None, typer.Option(help="Households the platform may watch at once, all keys.")
    ] = None,
) -> None:
    """Show, or set, a platform's budgets over all its keys."""

    store = KeyStore(located(load_settings(), "keys"))
    try:
        if daily_households is None and watch_cap is None:
            p = store.platform(platform)
        else:
            p = store.set_platform(platform, daily_households, watch_cap)
    except KeyRefused as e:
        fail(str(e))
    console.print(f"{p.platform}: {p.daily_households:,} households a day, {p.watch_cap:,} watches")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (not the secret).")],
) -> None:
    """Revoke a key at once."""

    try:
        KeyStore(located(load_settings(), "keys")).revoke(key_id)
    except KeyRefused as e:
        fail(str(e))
    console.print(f"key {key_id} revoked")


def _anchor_key(key: Path | None) -> Path:
    path = key or load_settings().audit_anchor_key
    if path is None:
        fail("no signing key: pass --key or set CREDREF_AUDIT_ANCHOR_KEY")
    assert path is not None
    return path


@audit_app.command("keygen")
def audit_keygen(
    key: Annotated[Path | None, typer.Option(help="Where to write the signing key.")] = None,
) -> None:
    """Make the Ed25519 key that signs audit checkpoints (and its .pub beside it)."""

    try:
        public = anchor.generate_key(_anchor_key(key))
    except AnchorError as e:
        fail(str(e))
    console.print(f"signing key written; give the regulator the public key {public}")


@audit_app.command("anchor")
def audit_anchor(
    key: Annotated[Path | None, typer.Option(help="Signing key (default: setting).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Checkpoint folder (default: CREDREF_AUDIT_ANCHOR_DIR).")
    ] = None,
) -> None:
    """Write a signed checkpoint of the audit chain's head to a folder kept elsewhere."""

    s = load_settings()
    folder = out or s.audit_anchor_dir
    if folder is None:
        fail("no checkpoint folder: pass --out or set CREDREF_AUDIT_ANCHOR_DIR")
    assert folder is not None
    try:
        path = anchor.write_anchor(AuditLog(located(s, "audit")), _anchor_key(key), folder)
    except AnchorError as e:
        fail(str(e))
    console.print(f"checkpoint {path}")


@audit_app.command("prune")
def audit_prune(
    older_than_days: Annotated[
        int | None,
        typer.Option(help="Delete rows older than this (default: CREDREF_AUDIT_RETENTION_DAYS)."),
    ] = None,
    key: Annotated[Path | None, typer.Option(help="Signing key (default: setting).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Checkpoint folder (default: CREDREF_AUDIT_ANCHOR_DIR).")
    ] = None,
) -> None:
    """Retention: sign a checkpoint at the last row older than the period, then delete the
    rows up to it; `audit verify --anchors` checks the rest from that signed base."""

    s = load_settings()
    folder = out or s.audit_anchor_dir
    if folder is None:
        fail("no checkpoint folder: pass --out or set CREDREF_AUDIT_ANCHOR_DIR")
    assert folder is not None
    days = s.audit_retention_days if older_than_days is None else older_than_days
    if days < 1:
        fail("--older-than-days must be at least 1")
    before = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="microseconds")
    try:
        base, deleted = anchor.prune(
            AuditLog(located(s, "audit")), _anchor_key(key), folder, before
        )
    except (AnchorError, AuditUnavailable) as e:
        fail(str(e))
    console.print(
        f"{deleted:,} rows older than {days} days deleted; the chain now starts after row "
        f"{base}, vouched for by a signed checkpoint in {folder}"
    )


@audit_app.command("verify")
def audit_verify(
    anchors: Annotated[
        Path | None, typer.Option(help="Folder of signed checkpoints to check against.")
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(help="Public key of the checkpoints (default: the signing key's .pub)."),
    ] = None,
    expect_rows: Annotated[
        int | None, typer.Option(help="A head noted by hand: this row number ...")
    ] = None,
    expect_hash: Annotated[str | None, typer.Option(help="... still has this hash.")] = None,
) -> None:
    """Check the hash chain (and checkpoints); exit 1 on any edit, deletion, cut or rewrite."""

    s = load_settings()
    log = AuditLog(located(s, "audit"))
    if anchors is not None:
        pub = public_key or (anchor.public_path(s.audit_anchor_key) if s.audit_anchor_key else None)
        if pub is None:
            fail("checking checkpoints needs --public-key (or CREDREF_AUDIT_ANCHOR_KEY)")
        assert pub is not None
        try:
            report = anchor.verify_anchored(log, anchors, anchor.load_public(pub))
        except AnchorError as e:
            fail(str(e))
    else:
        given = [(expect_rows, expect_hash)] if expect_rows is not None and expect_hash else []
        report = log.verify(checkpoints=given)
    console.print(f"{report.rows} rows, head {report.head_hash}")
    if not report.ok:
        for p in report.problems:
            console.print(f"[red]{p}[/red]")
        raise typer.Exit(code=1)
    console.print("chain intact" + (" and every checkpoint holds" if anchors else ""))


@audit_app.command("export")
def audit_export(
    since: Annotated[str, typer.Option(help="From this date (YYYY-MM-DD).")],
    platform: Annotated[str | None, typer.Option(help="Platform name.")] = None,
    key: Annotated[
        str | None, typer.Option(help="One key's id (`credref keys list`): what it asked.")
    ] = None,
) -> None:
    """Write a platform's or a key's audit rows since a date as CSV to standard output."""

    if platform is None and key is None:
        fail("name a --platform or a --key")
    parse_date(since)
    print(AuditLog(located(load_settings(), "audit")).export_csv(platform, since, key), end="")


@audit_app.command("subject")
def audit_subject(
    uscc: Annotated[str, typer.Argument(help="The household's unified social credit code.")],
    since: Annotated[str, typer.Option(help="From this date (YYYY-MM-DD).")] = "",
) -> None:
    """A household's query record, for its own request: which platforms asked about it,
    when, why, and which kind of answer they got (never what they claimed)."""

    if since:
        parse_date(since)
    if not s_uscc.is_valid(uscc):
        fail("not a valid unified social credit code")
    rows = AuditLog(located(load_settings(), "audit")).about(s_uscc.compact(uscc), since)
    table = RichTable(title=f"{len(rows)} requests about this household")
    for col in ("at", "platform", "endpoint", "purpose", "answer"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["at"], r["platform"] or "(no key)", r["endpoint"], r["purpose"] or "", r["answer"]
        )
    console.print(table)


@audit_app.command("replay")
def audit_replay(
    request_id: Annotated[str, typer.Argument(help="The request id of an audited answer.")],
) -> None:
    """Rebuild an answer from the warehouse as known at its publication, with its model
    version, and say whether it is the same (exit 1 if it differs, 2 if it cannot)."""
    import mlflow  # heavy: loaded only when this command runs

    from training.registry import load_version  # heavy: loaded only when this command runs

    s = load_settings()
    if not s.audit_path.is_file():
        fail(f"no audit log at {s.audit_path} (CREDREF_AUDIT_DB)")
    mlflow.set_tracking_uri(s.tracking_uri)

    def model(version: str):
        return load_version(s.registered_model, version).unwrap_python_model().model

    # the answer's objection markers are rebuilt for the moment it was given
    from serving.objections import ObjectionStore

    objected = ObjectionStore(located(s, "watch")).markers
    try:
        r = replay(request_id, s.audit_path, s.online_path, s.warehouse_path, model, objected)
    except ReplayError as e:
        fail(str(e))
    table = RichTable(
        title=f"{r.endpoint} from {r.publication} (as of {r.as_of}, known through "
        f"{r.known_through}), model version {r.model_version}"
    )
    for col in ("field", "answered", "replayed"):
        table.add_column(col)
    for k, v in r.recorded.items():
        table.add_row(k, str(v), str(r.replayed.get(k)))
    console.print(table)
    if r.equal:  # naming what was compared: never "equal" on nothing
        compared = ", ".join(r.recorded)
        console.print(f"equal: the answer is rebuilt exactly (compared: {compared})")
        return
    console.print(f"[red]different:[/red] {', '.join(r.differences)}")
    raise typer.Exit(code=1)
