"""The ``credref`` command line. Settings come from ``CREDREF_*`` environment variables."""

from __future__ import annotations

import logging
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

from credref.settings import load_settings

app = typer.Typer(
    help="credref: credit-risk reference scoring on regulator records.", no_args_is_help=True
)
# Logs (CI, pipes) get a wide fixed width; a terminal keeps its own.
console = Console() if sys.stdout.isatty() else Console(width=160)
logger = logging.getLogger("credref")


def _parse_date(value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError as e:
        raise typer.BadParameter(f"{value!r} is not a date in YYYY-MM-DD form") from e


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """credref: credit-risk reference scoring on regulator records."""
    _setup_logging(verbose)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
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
    from synth.generate import generate as run

    settings = load_settings()
    dates = None
    if oracle_dates is not None:
        dates = (
            ()
            if oracle_dates == "none"
            else tuple(_parse_date(d.strip()) for d in oracle_dates.split(","))
        )
    try:
        counts = run(
            out,
            households,
            settings.seed if seed is None else seed,
            _parse_date(end),
            settings.id_secret_bytes(),
            dates,
            workers=workers,
            drift=drift,
            known_at=_parse_date(known_at) if known_at else None,
            history=history,
            feed_days=feed_days,
        )
    except ValueError as e:
        _fail(str(e))
    table = RichTable(title=f"generated {out}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    console.print(table)


@app.command()
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
            help="Knowledge day for a later full export's changed rows (default: today). "
            "Change sets carry their own date."
        ),
    ] = None,
) -> None:
    """Validate an export or apply a day's change set (one transaction)."""
    from features.changeset import ChangeSetError
    from features.ingest import ExportError
    from features.ingest import ingest as run

    settings = load_settings()
    day = _parse_date(known_on) if known_on else None
    try:
        reports = run(
            path, settings.warehouse_path, memory_limit=settings.duckdb_memory_limit, known_on=day
        )
    except (ExportError, ChangeSetError) as e:
        _fail(f"{e} (the warehouse was not changed)")
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


@app.command()
def history(
    uscc: Annotated[str, typer.Argument(help="The household's unified social credit code.")],
) -> None:
    """Print every version of a household's records, with when each was known (no
    personal fields)."""
    from features.history import household_history

    con = _warehouse_ro()
    try:
        rows = household_history(con, uscc)
    finally:
        con.close()
    if not rows:
        _fail("no record of this household in the warehouse")
    table = RichTable(title="record versions (known_to empty: current)")
    for col in ("table", "key", "known_from", "known_to", "values"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.table, r.key, str(r.known_from), str(r.known_to or ""), r.values)
    console.print(table)


@app.command()
def summary() -> None:
    """Print the per-city summary of the warehouse."""
    from features.summary import city_summary

    con = _warehouse_ro()
    df = city_summary(con)
    con.close()
    table = RichTable(title="per-city summary")
    for col in df.columns:
        table.add_column(col, justify="left" if col == "city" else "right")
    for row in df.itertuples(index=False):
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    console.print(table)


def _warehouse_ro():
    from features.warehouse import connect

    settings = load_settings()
    try:
        return connect(
            settings.warehouse_path, read_only=True, memory_limit=settings.duckdb_memory_limit
        )
    except FileNotFoundError as e:
        _fail(str(e))


@app.command()
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
    from features.dataset import KnownAt, as_of_dates, build_training_set, dense_dates, parse_every
    from features.policy import Policy

    shares = None
    try:
        dates = as_of_dates(_parse_date(from_), _parse_date(to), parse_every(every))
        if dense_to is not None:
            dates, shares = dense_dates(dates, _parse_date(dense_to))
        pol = Policy(policy)
        knowledge = KnownAt(known_at)
    except ValueError as e:
        _fail(str(e))
    con = _warehouse_ro()
    try:
        manifest = build_training_set(
            con, dates, out, horizon, truth, pol, progress=True, known_at=knowledge, shares=shares
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    finally:
        con.close()
    table = RichTable(title=f"training set {out} (catalogue {manifest['catalogue_version']})")
    for col in ("as_of", "rows", "label_rate"):
        table.add_column(col, justify="right")
    for p in manifest["per_date"]:
        table.add_row(p["as_of"], f"{p['rows']:,}", f"{p['label_rate']:.4f}")
    console.print(table)


@app.command()
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
    from features.dataset import build_snapshot

    day = _parse_date(as_of)
    known = None if known_at == "now" else _parse_date(known_at)
    con = _warehouse_ro()
    try:
        manifest = build_snapshot(con, day, out, known_at=known)
    finally:
        con.close()
    seen = "as known now" if known is None else f"as known on {known}"
    console.print(f"snapshot {out}: {manifest['rows']:,} households operating on {day}, {seen}")


@app.command()
def train(
    config: Annotated[Path, typer.Option(help="TOML training config (see configs/demo.toml).")],
    trials: Annotated[
        int | None,
        typer.Option(
            help="Optuna trials over the LightGBM parameters on the validation window "
            "before fitting (default: the config's [model] trials, else none)."
        ),
    ] = None,
) -> None:
    """Train, check, evaluate and register a model (not yet champion: see promote)."""
    from dataclasses import replace

    from training.train import TrainConfig
    from training.train import train as run

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        cfg = TrainConfig.from_toml(config)
        if trials is not None:
            cfg = replace(cfg, trials=trials)
        result = run(
            cfg,
            settings.tracking_uri,
            settings.artifact_root,
            settings.registered_model,
            settings.analyst,
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    s = result.summary
    table = RichTable(
        title=f"trained version {result.version} ({result.chosen}) — run {result.run_id[:8]}"
    )
    table.add_column("metric")
    table.add_column("out-of-time test", justify="right")
    for k, v in result.test_metrics.items():
        table.add_row(k, f"{v:.4f}")
    for k, v in s["test_auc"].items():
        table.add_row(f"auc {k}", f"{v:.4f}")
    if s.get("oracle_auc"):
        table.add_row("oracle auc", f"{s['oracle_auc']:.4f}")
        table.add_row("oracle ratio", f"{s['oracle_ratio']:.4f}")
    if s.get("all_published"):
        table.add_row(
            "auc, all published records", f"{s['all_published']['test_auc_all_published']:.4f}"
        )
    table.add_row("class rates rise A→D", str(s["class_rates_increasing"]))
    for key, label, spec in (
        ("worst_month_auc", "worst month: auc", ".4f"),
        ("worst_month_ece", "worst month: ece", ".4f"),
        ("worst_month_oracle_ratio", "worst month: oracle ratio", ".4f"),
        ("worst_month_class_moves_without_event", "worst month: class moves, no event", ".2%"),
    ):
        if s.get(key) is not None:
            table.add_row(label, format(s[key], spec))
    table.add_row("checks passed", str(result.checks_passed))
    console.print(table)
    console.print(f"selection: {s['why']}")
    if not result.checks_passed:
        console.print("[red]checks failed:[/red] " + "; ".join(s["check_failures"]))
        raise typer.Exit(code=1)


@app.command()
def promote(
    approver: Annotated[
        str, typer.Option(help="Who approves (four eyes: not who trained the version).")
    ],
    version: Annotated[str | None, typer.Option(help="Model version (default: newest).")] = None,
    accept_impact: Annotated[
        str | None,
        typer.Option(help="Promote although more households than allowed change class: why."),
    ] = None,
) -> None:
    """Make a version the champion if it passes the gate (four eyes, checks, ECE, AUC vs
    champion, impact on the published households); the approval is recorded on it."""
    import mlflow

    from training.registry import promote as run

    settings = load_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        found = _impact(settings, version)
        result = run(
            settings.registered_model,
            version,
            approver=approver,
            impact_share=found[2].changed_share if found else None,
            max_class_change=settings.max_class_change,
            accept_impact=accept_impact,
        )
    except ValueError as e:
        _fail(str(e))
    if result.promoted:
        console.print(
            f"version {result.version} is now the champion (test AUC {result.challenger_auc:.4f})"
        )
        if (settings.online_path / "current").exists():  # households whose class it moves
            from credref.cli_refresh import derive_and_print_events

            derive_and_print_events(settings)
        return
    console.print(f"[red]refused[/red] version {result.version}:")
    for r in result.reasons:
        console.print(f"  - {r}")
    raise typer.Exit(code=1)


def _impact(settings, version: str | None):
    """The challenger's impact on the current publication, or None (no publication or no
    other champion)."""
    from training.impact import run_impact

    if not (settings.online_path / "current").exists():
        return None
    found = run_impact(
        settings.registered_model, version, settings.online_path, settings.watch_path
    )
    if found is not None:
        current, challenger, im = found
        console.print(
            f"impact of version {challenger} against champion {current}: "
            f"{im.changed_share:.2%} of {im.households:,} published households change class "
            f"(logged to MLflow: impact/impact.html)"
        )
        for platform, w in im.watched_by_platform.items():
            console.print(
                f"  {platform}: {w['changed']:,} of its {w['watched']:,} watched households"
            )
    return found


@app.command()
def impact(
    version: Annotated[str | None, typer.Option(help="Model version (default: newest).")] = None,
) -> None:
    """Score the latest publication's households with the version and the champion:
    class migration, share changing class by city, score shift, reasons (HTML + JSON in
    MLflow)."""
    import mlflow

    settings = load_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        found = _impact(settings, version)
    except ValueError as e:
        _fail(str(e))
    if found is None:
        _fail("nothing to compare: no publication, or no champion other than this version")
    im = found[2]
    table = RichTable(title="class migration (rows: champion, columns: challenger)")
    table.add_column("")
    for c in "ABCD":
        table.add_column(c, justify="right")
    for r in "ABCD":
        table.add_row(r, *(f"{im.migration[r][c]:,}" for c in "ABCD"))
    console.print(table)
    s = im.score_shift
    console.print(
        f"score shift: mean {s['mean']:+.1f}, median {s['p50']:+.0f}, 5%-95% "
        f"{s['p05']:+.0f}..{s['p95']:+.0f}; first reason changes for "
        f"{im.first_reason_changed_share:.2%}"
    )


@app.command()
def rollback() -> None:
    """Restore the previous champion."""
    import mlflow

    from training.registry import rollback as run

    settings = load_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        version = run(settings.registered_model)
    except ValueError as e:
        _fail(str(e))
    console.print(f"version {version} is the champion again")


@app.command()
def publish(
    as_of: Annotated[
        str | None,
        typer.Option(help="As-of date (default: the last day the warehouse observes)."),
    ] = None,
) -> None:
    """Publish a snapshot to the online store; the service switches to it atomically."""
    from features.dataset import observed_through
    from serving.publish import publish as run

    settings = load_settings()
    con = _warehouse_ro()
    try:
        day = _parse_date(as_of) if as_of else observed_through(con)
        meta = run(con, day, settings.online_path, settings.id_secret_bytes(), progress=True)
    finally:
        con.close()
    console.print(
        f"published {meta['file']}: {int(meta['households']):,} households registered on "
        f"{day}, {int(meta['operating']):,} operating (catalogue {meta['catalogue_version']})"
    )


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="Port (default: CREDREF_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: CREDREF_WORKERS).")
    ] = None,
) -> None:
    """Import the MLflow champion into BentoML's store, then start the service."""
    import os

    from serving.model_store import ModelUnavailable, load_served_model, use_store
    from serving.online import NoSnapshot, OnlineStore
    from serving.preflight import Incompatible, check_compatible

    settings = load_settings()
    use_store(settings.bentoml_path)
    try:  # the checks every worker makes, made once up front with a clear message
        served = load_served_model(settings.tracking_uri, settings.registered_model)
        with OnlineStore(settings.online_path).current() as snap:
            check_compatible(served, snap)
    except (ModelUnavailable, NoSnapshot, Incompatible, ValueError) as e:
        _fail(f"the service cannot start: {e}")
    console.print(
        f"model {served.tag} (from {served.source}); publication {snap.name} as of {snap.as_of}"
    )
    env = {
        **os.environ,
        "BENTOML_HOME": str(settings.bentoml_path.resolve()),
        "CREDREF_PORT": str(port or settings.port),
        "CREDREF_WORKERS": str(workers or settings.workers),
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: only
        # the proxies named here may say who the client is (serving.gateway's limiter
        # and the audit key on the address).
        "FORWARDED_ALLOW_IPS": settings.trusted_proxies,
    }
    argv = ["bentoml", "serve", "serving.service:ReferenceService"]
    argv += ["--port", env["CREDREF_PORT"], "--host", settings.host]
    os.execvpe(sys.executable, [sys.executable, "-m", *argv], env)


def _served_model():
    """The champion as the service loads it (imported into BentoML's store); exit 2 if none."""
    from serving.model_store import ModelUnavailable, load_served_model, use_store

    settings = load_settings()
    use_store(settings.bentoml_path)
    try:
        return load_served_model(settings.tracking_uri, settings.registered_model)
    except ModelUnavailable as e:
        _fail(str(e))


@app.command("score-all")
def score_all(
    out: Annotated[Path, typer.Option(help="Output folder: scores + manifest.json.")],
    as_of: Annotated[
        str | None,
        typer.Option(help="As-of date (default: the last day the warehouse observes)."),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="duckdb (embedded) or spark (local mode).")
    ] = "duckdb",
    spark_master: Annotated[str, typer.Option(help="Spark master URL.")] = "local[2]",
) -> None:
    """Score every operating household with the champion (score, class, PD, reasons)."""
    import tempfile

    from features.dataset import observed_through
    from serving.batch import score_all_duckdb, score_all_spark

    if engine not in ("duckdb", "spark"):
        _fail(f"--engine must be duckdb or spark, not {engine!r}")
    settings = load_settings()
    served = _served_model()
    con = _warehouse_ro()
    try:
        day = _parse_date(as_of) if as_of else observed_through(con)
        if engine == "duckdb":
            manifest = score_all_duckdb(
                con, day, served.model, served.version, served.tag, out, progress=True
            )
        else:
            from features.engines import export_tables, spark_session

            with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
                export_tables(con, Path(tmp))
                spark = spark_session(spark_master)
                try:
                    manifest = score_all_spark(
                        spark, Path(tmp), day, served.model, served.version, served.tag, out
                    )
                finally:
                    spark.stop()
    finally:
        con.close()
    console.print(
        f"scored {manifest['rows']:,} households as of {day} with {served.tag} "
        f"on {engine} in {manifest['wall_s']} s -> {out}"
    )


@app.command("model-files")
def model_files(
    out: Annotated[Path, typer.Option(help="Folder for the champion's files.")],
) -> None:
    """Write the champion's scoring files (booster, calibration, points) for spark-submit."""
    served = _served_model()
    served.model.save(out)
    meta = out / "scoring.json"
    import json

    meta.write_text(
        json.dumps({**json.loads(meta.read_text()), "mlflow_version": served.version}, indent=2)
    )
    console.print(f"{served.tag} -> {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")


@app.command()
def monitor(
    as_of: Annotated[
        str | None,
        typer.Option(help="As-of date (default: the last day the warehouse observes)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: <home>/monitoring/<as-of>).")
    ] = None,
) -> None:
    """Drift (PSI/CSI), class migration, back-test and slices of the champion: HTML + JSON."""
    import mlflow

    from features.dataset import observed_through
    from training.monitor import champion_reference, gather, log_to_mlflow
    from training.monitor_metrics import build_report
    from training.monitor_render import write_report

    settings = load_settings()
    served = _served_model()
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        version, run_id, reference = champion_reference(settings.registered_model)
    except ValueError as e:
        _fail(str(e))
    con = _warehouse_ro()
    try:
        day = _parse_date(as_of) if as_of else observed_through(con)
        inputs = gather(con, day, reference)
    finally:
        con.close()
    report = build_report(served.model, inputs, version)
    folder = out or settings.home / "monitoring" / day.isoformat()
    files = write_report(report, folder)
    run = log_to_mlflow(report, files, run_id)
    s = report["summary"]
    table = RichTable(title=f"monitoring as of {day} (model v{version})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("verdict")
    table.add_row("score PSI", f"{s['score_psi']:.4f}", s["score_verdict"])
    for name, v in sorted(report["feature_csi"].items(), key=lambda kv: -kv[1]["psi"])[:5]:
        table.add_row(f"CSI {name}", f"{v['psi']:.4f}", v["verdict"])
    table.add_row(
        "back-test classes inconsistent (5%)", str(s["backtest_inconsistent_classes"]), ""
    )
    console.print(table)
    console.print(f"report: {files[1]} (figures: {files[0]}); MLflow run {run[:8]}")


def _register_subcommands() -> None:
    from credref.cli_ops import audit_app, keys_app
    from credref.cli_refresh import refresh, refresh_plan
    from credref.cli_validate import validate

    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
    app.command()(refresh)
    app.command("refresh-plan")(refresh_plan)
    app.command()(validate)


_register_subcommands()


if __name__ == "__main__":  # pragma: no cover
    app()
