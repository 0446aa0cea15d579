"""``credref publish|serve|score-all``: the online store built, the service started, every
household scored in one batch."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from credref.cli.common import ObservedDay, console, fail, parse_date, served_model, warehouse_ro
from credref.cli.errors import say
from features.dataset import observed_through
from features.engines import export_tables, spark_session
from online_store.publish import publish as publish_store
from online_store.reader import NoSnapshot, OnlineStore
from settings import load_settings


def publish(
    as_of: ObservedDay = None,
) -> None:
    """Publish a snapshot to the online store; the service switches to it atomically."""

    settings = load_settings()
    con = warehouse_ro()
    try:
        day = parse_date(as_of) if as_of else observed_through(con)
        meta = publish_store(
            con, day, settings.online_path, settings.id_secret_bytes(), progress=True
        )
    finally:
        con.close()
    console.print(
        f"published {meta['file']}: {int(meta['households']):,} households registered on "
        f"{day}, {int(meta['operating']):,} operating (catalogue {meta['catalogue_version']})"
    )


def serve(
    port: Annotated[int | None, typer.Option(help="Port (default: CREDREF_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: CREDREF_WORKERS).")
    ] = None,
) -> None:
    """Import the MLflow champion into BentoML's store, then start the service."""

    from scoring.served import (  # heavy: loaded only when this command runs
        ModelUnavailable,
        load_served_model,
        use_store,
    )
    from serving.preflight import (  # heavy: loaded only when this command runs
        Incompatible,
        check_compatible,
        publication_readiness,
    )

    settings = load_settings()
    use_store(settings.bentoml_path)
    try:  # the checks every worker makes, made once up front with a clear message
        served = load_served_model(settings.tracking_uri, settings.registered_model)
        with OnlineStore(settings.online_path).current() as snap:
            check_compatible(served, snap)
    except (ModelUnavailable, NoSnapshot, Incompatible, ValueError) as e:
        fail(f"the service cannot start: {e}")
    console.print(
        f"model {served.tag} (from {served.source}); publication {snap.name} as of {snap.as_of}"
    )
    found = publication_readiness(settings)
    if found.get("cause") == "snapshot_stale":
        say(
            f"publication {found['publication']} is {found['age_days']} days older than "
            f"today ({found['today']}, CREDREF_TODAY), past CREDREF_MAX_SNAPSHOT_AGE_DAYS="
            f"{found['max_age_days']}: every score and verification will be 503 snapshot_stale "
            "until `credref refresh` (a generated domain: set CREDREF_TODAY to its last day)",
            label="[yellow]warning:[/yellow] ",
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


def score_all(
    out: Annotated[Path, typer.Option(help="Output folder: scores + manifest.json.")],
    as_of: ObservedDay = None,
    engine: Annotated[
        str, typer.Option(help="duckdb (embedded) or spark (local mode).")
    ] = "duckdb",
    spark_master: Annotated[str, typer.Option(help="Spark master URL.")] = "local[2]",
) -> None:
    """Score every operating household with the champion (score, class, PD, reasons)."""

    from scoring.batch import (  # heavy: loaded only when this command runs
        score_all_duckdb,
        score_all_spark,
    )

    if engine not in ("duckdb", "spark"):
        fail(f"--engine must be duckdb or spark, not {engine!r}")
    settings = load_settings()
    served = served_model()
    con = warehouse_ro()
    try:
        day = parse_date(as_of) if as_of else observed_through(con)
        if engine == "duckdb":
            manifest = score_all_duckdb(
                con, day, served.model, served.version, served.tag, out, progress=True
            )
        else:
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
