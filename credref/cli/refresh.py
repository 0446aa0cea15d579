"""``credref refresh`` and ``credref refresh-plan``: the daily refresh of the online store
(registered on the main app by :mod:`credref.cli.app`; the work is :mod:`online_store.refresh`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table as RichTable

from credref.cli.common import console, fail, parse_date, warehouse_ro
from features.engines import export_tables
from online_store.changes import StaleChanges
from online_store.incremental import NotIncremental, plan
from online_store.refresh import Recomputation, RefreshRefused, RefreshTask
from online_store.refresh import refresh as refresh_store
from records.changeset import ChangeSetError
from records.ingest import ExportError
from settings import load_settings


def refresh(
    feed: Annotated[
        Path | None,
        typer.Option(
            help="Folder of daily change sets (feed/YYYY-MM-DD/); default CREDREF_FEED_DIR."
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="Publication date (default: the latest change set's)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Publish ahead of the last change set, or before the current one."
        ),
    ] = False,
    full: Annotated[
        bool,
        typer.Option("--full", help="Rebuild the whole publication instead of in place."),
    ] = False,
    engine: Annotated[
        str, typer.Option(help="Where the day's difference is computed: duckdb or spark.")
    ] = "duckdb",
    spark_master: Annotated[
        str, typer.Option(help="Spark master for --engine spark, e.g. spark://host:7077.")
    ] = "local[2]",
    changes: Annotated[
        Path | None,
        typer.Option(
            help="Apply the difference another host wrote (--share) or a spark-submit run "
            "(online_store.changes); refused unless computed from this host's publication. "
            "A folder of day folders: every day since this host's publication, in order."
        ),
    ] = None,
    share: Annotated[
        Path | None,
        typer.Option(
            help="Also write the day's difference under this folder (one YYYY-MM-DD folder "
            "a day), for the serving hosts' --changes (docs/deployment.md)."
        ),
    ] = None,
) -> None:
    """Apply the feed's new change sets, bring the online store to the domain's today
    (rewriting only the households whose answer inputs changed), report what changed."""

    if engine not in ("duckdb", "spark"):
        fail("--engine is duckdb or spark")
    settings = load_settings()
    try:
        task = RefreshTask(
            warehouse=settings.warehouse_path,
            feed=feed or settings.feed_dir,
            online=settings.online_path,
            secret=settings.id_secret_bytes(),
            as_of=parse_date(as_of) if as_of else None,
            force=force,
            memory_limit=settings.duckdb_memory_limit,
            full=full,
            how=Recomputation(engine, spark_master, changes, share),
        )
        report = refresh_store(task)
    except (RefreshRefused, ExportError, ChangeSetError, StaleChanges) as e:
        fail(f"{e} (nothing was published)")
    _print(report)
    if share is not None and report.shared is None:
        console.print(
            "[yellow]a full build has no difference to share[/yellow]: copy this host's "
            "publication to the serving hosts (docs/deployment.md)"
        )
    derive_and_print_events(settings)


def derive_and_print_events(settings) -> None:
    """The watching platforms' events for the current publication and champion (after a
    refresh or a promotion; a rerun adds none twice). Without watches, nothing to do."""
    from scoring.served import (  # heavy: loaded only when this command runs
        ModelUnavailable,
        load_served_model,
        use_store,
    )
    from serving.events import derive_current  # heavy: loaded only when this command runs
    from serving.state import located  # heavy: loaded only when this command runs

    watch = located(settings, "watch")
    if isinstance(watch, Path) and not watch.exists():  # no watch list on this host
        return
    use_store(settings.bentoml_path)
    try:
        served = load_served_model(settings.tracking_uri, settings.registered_model)
    except ModelUnavailable as e:
        console.print(f"[yellow]no change-feed events derived[/yellow]: {e}")
        return
    # On a shared database every host's refresh derives the day's events; the second
    # finds the answers already recorded and adds none (serving.events).
    found = derive_current(watch, settings.online_path, served)
    if found.skipped:
        console.print("change feed: events already derived for this publication and model")
        return
    kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(found.by_kind.items())) or "none"
    console.print(
        f"change feed: {found.watched:,} watched households, {found.events:,} events ({kinds})"
    )


def _print(report) -> None:
    if report.kind == "unchanged":
        console.print(
            f"nothing to apply: this host holds the latest shared publication "
            f"{report.publication} (as of {report.as_of})"
        )
        return
    if report.caught_up:
        days = ", ".join(d.isoformat() for d in report.caught_up)
        console.print(f"shared differences applied, in order: {days}")
    applied = ", ".join(d.isoformat() for d in report.applied) or "none"
    how = "in place" if report.kind == "incremental" else f"full rebuild ({report.why_full})"
    console.print(
        f"change sets applied: {applied}; published {report.publication} as of "
        f"{report.as_of} {how}: {report.households:,} households, "
        f"{report.recomputed:,} recomputed, {report.rewritten:,} rewritten"
    )
    if report.shared is not None:
        console.print(f"the day's difference is in {report.shared}, for the serving hosts")
    if report.seconds:
        console.print("seconds: " + ", ".join(f"{k} {v}" for k, v in report.seconds.items()))
    if report.previous and report.kind == "incremental":
        table = RichTable(title=f"rewritten since {report.previous}")
        table.add_column("what")
        table.add_column("households", justify="right")
        table.add_row("new in the register", f"{report.added:,}")
        table.add_row("removed (entered in error)", f"{report.removed:,}")
        table.add_row("a record learnt", f"{report.records_learnt:,}")
        table.add_row("status changed", f"{report.status_changed:,}")
        for name, n in sorted(report.changed_by_reason.items(), key=lambda kv: -kv[1]):
            table.add_row(f"by reason: {name}", f"{n:,}")
        console.print(table)


def refresh_plan(
    tables: Annotated[
        Path | None,
        typer.Option(help="Also export the warehouse's tables and history here as Parquet."),
    ] = None,
) -> None:
    """Print what a refresh of the current publication starts from (JSON), for a
    recomputation on a cluster (``spark-submit online_store/spark_refresh.py --plan``); with
    ``--tables``, also write the record tables the cluster reads."""

    try:
        found = plan(load_settings().online_path)
    except NotIncremental as e:
        fail(str(e))
    if tables is not None:
        con = warehouse_ro()
        try:
            export_tables(con, tables)
        finally:
            con.close()
    print(json.dumps(found, indent=2))
