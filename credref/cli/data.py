"""``credref generate|ingest|history|summary|dataset|features``: the records into the
warehouse and the datasets out of it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table as RichTable

from credref.cli.common import console, fail, parse_date, warehouse_ro
from features.dataset import (
    KnownAt,
    as_of_dates,
    build_snapshot,
    build_training_set,
    dense_dates,
    parse_every,
)
from records.changeset import ChangeSetError
from records.codes import uscc_problem
from records.history import household_history
from records.ingest import ExportError
from records.ingest import ingest as ingest_into
from records.policy import Policy
from records.summary import city_summary
from settings import load_settings


def generate(
    out: Annotated[Path, typer.Option(help="Output folder for the export and its truth/ folder.")],
    households: Annotated[
        int, typer.Option(help="Households in the register (all statuses).")
    ] = 100_000,
    seed: Annotated[int | None, typer.Option(help="Seed (default: CREDREF_SEED).")] = None,
    end: Annotated[
        str, typer.Option(help="Last day of the history, a month end (YYYY-MM-DD).")
    ] = "2026-09-30",
    oracle_dates: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated month ends for the oracle; default every month end; 'none'."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes (output does not depend on it).")
    ] = 2,
    drift: Annotated[
        bool,
        typer.Option(
            "--drift", help="Add a campaign (Wuhan retail and catering from 2025) to monitor."
        ),
    ] = False,
    known_at: Annotated[
        str | None,
        typer.Option(help="Write the records as known at the end of this day (default: --end)."),
    ] = None,
    history: Annotated[
        bool,
        typer.Option(
            "--history", help="Write every version known by then, with known_from/known_to."
        ),
    ] = False,
    feed_days: Annotated[
        int,
        typer.Option(
            help="Write the export as known N days before --end, and one change set per "
            "following day under OUT/feed/YYYY-MM-DD/."
        ),
    ] = 0,
) -> None:
    """Generate a synthetic regulator domain for the 8 pilot cities."""
    # synth is not product code: loaded only when this command runs
    from synth.generate import generate as run

    settings = load_settings()
    dates = None
    if oracle_dates is not None:
        dates = (
            ()
            if oracle_dates == "none"
            else tuple(parse_date(d.strip()) for d in oracle_dates.split(","))
        )
    try:
        counts = run(
            out,
            households,
            settings.seed if seed is None else seed,
            parse_date(end),
            settings.id_secret_bytes(),
            dates,
            workers=workers,
            drift=drift,
            known_at=parse_date(known_at) if known_at else None,
            history=history,
            feed_days=feed_days,
        )
    except ValueError as e:
        fail(str(e))
    table = RichTable(title=f"generated {out}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    console.print(table)


def ingest(
    path: Annotated[
        Path,
        typer.Argument(
            help="A full export (<table>.parquet|csv files) or a change set (with its manifest.json)."
        ),
    ],
    known_on: Annotated[
        str | None,
        typer.Option(
            help="Knowledge day for a later full export's changed rows (default: the "
            "domain's today, CREDREF_TODAY). "
            "Change sets carry their own date."
        ),
    ] = None,
) -> None:
    """Validate an export or apply a day's change set (one transaction)."""

    settings = load_settings()
    day = parse_date(known_on) if known_on else settings.domain_today()
    try:
        reports = ingest_into(
            path, settings.warehouse_path, memory_limit=settings.duckdb_memory_limit, known_on=day
        )
    except (ExportError, ChangeSetError) as e:
        fail(f"{e} (the warehouse was not changed)")
    table = RichTable(title=f"ingested into {settings.warehouse_path}")
    cols = ("table", "file", "read", "accepted", "quarantined", "inserted", "replaced")
    for col in (*cols, "unchanged", "deleted", "note"):
        table.add_column(col, justify="left" if col in ("table", "file", "note") else "right")
    for r in reports:
        note = "already loaded" if r.skipped else ""
        counts = (r.read, r.accepted, r.quarantined, r.inserted, r.replaced, r.unchanged, r.deleted)
        table.add_row(r.table, r.file, *(f"{n:,}" for n in counts), note)
    console.print(table)
    if any(r.quarantined for r in reports):
        console.print(
            "[yellow]quarantined rows and their reasons are in table _quarantine[/yellow]"
        )


def history(
    uscc: Annotated[str, typer.Argument(help="The household's unified social credit code.")],
) -> None:
    """Print every version of a household's records, with when each was known (no
    personal fields)."""
    problem = uscc_problem(uscc)
    if problem is not None:
        fail(f"not a valid unified social credit code: {problem}")
    con = warehouse_ro()
    try:
        rows = household_history(con, uscc)
    finally:
        con.close()
    if not rows:
        fail("no record of this household in the warehouse")
    table = RichTable(title="record versions (known_to empty: current)")
    for col in ("table", "key", "known_from", "known_to", "values"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.table, r.key, str(r.known_from), str(r.known_to or ""), r.values)
    console.print(table)


def summary() -> None:
    """Print the per-city summary of the warehouse."""

    con = warehouse_ro()
    df = city_summary(con)
    con.close()
    table = RichTable(title="per-city summary")
    for col in df.columns:
        table.add_column(col, justify="left" if col == "city" else "right")
    for row in df.itertuples(index=False):
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    console.print(table)


def dataset(
    out: Annotated[Path, typer.Option(help="Output folder: dataset.parquet and manifest.json.")],
    from_: Annotated[
        str, typer.Option("--from", help="First as-of date, a month end.")
    ] = "2021-06-30",
    to: Annotated[str, typer.Option(help="Last as-of date (inclusive).")] = "2025-06-30",
    every: Annotated[
        str, typer.Option(help="Step between as-of dates: 1M covers every calendar position.")
    ] = "1M",
    dense_to: Annotated[
        str | None,
        typer.Option(
            help="Up to this day, also the first day of each month, each of these dates "
            "keeping half its households (the model learns the days a period opens)."
        ),
    ] = None,
    horizon: Annotated[int, typer.Option(help="Label window in months.")] = 12,
    truth: Annotated[
        Path | None, typer.Option(help="Generator truth folder: adds oracle_pd (evaluation only).")
    ] = None,
    policy: Annotated[
        str, typer.Option(help="legal, or all_published (measurement only).")
    ] = "legal",
    known_at: Annotated[
        str,
        typer.Option(
            help="as-of: each snapshot as known on its own as-of date (what production "
            "saw); now: as known today (measurement only)."
        ),
    ] = "as-of",
) -> None:
    """Build a training set: stacked point-in-time snapshots with labels."""

    shares = None
    try:
        dates = as_of_dates(parse_date(from_), parse_date(to), parse_every(every))
        if dense_to is not None:
            dates, shares = dense_dates(dates, parse_date(dense_to))
        pol = Policy(policy)
        knowledge = KnownAt(known_at)
    except ValueError as e:
        fail(str(e))
    con = warehouse_ro()
    try:
        manifest = build_training_set(
            con, dates, out, horizon, truth, pol, progress=True, known_at=knowledge, shares=shares
        )
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    finally:
        con.close()
    table = RichTable(title=f"training set {out} (catalogue {manifest['catalogue_version']})")
    for col in ("as_of", "rows", "label_rate"):
        table.add_column(col, justify="right")
    for p in manifest["per_date"]:
        table.add_row(p["as_of"], f"{p['rows']:,}", f"{p['label_rate']:.4f}")
    console.print(table)


def features(
    as_of: Annotated[str, typer.Option(help="As-of date (YYYY-MM-DD).")],
    out: Annotated[
        Path, typer.Option(help="Output Parquet file (a manifest is written beside it).")
    ],
    known_at: Annotated[
        str,
        typer.Option(help="Use only the record versions known on this day (YYYY-MM-DD), or now."),
    ] = "now",
) -> None:
    """Write one point-in-time scoring snapshot."""

    day = parse_date(as_of)
    known = None if known_at == "now" else parse_date(known_at)
    con = warehouse_ro()
    try:
        manifest = build_snapshot(con, day, out, known_at=known)
    finally:
        con.close()
    seen = "as known now" if known is None else f"as known on {known}"
    console.print(f"snapshot {out}: {manifest['rows']:,} households operating on {day}, {seen}")
