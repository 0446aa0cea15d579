"""What every ``credref`` command shares: the console, dates, the exit on a handled error,
the warehouse opened read-only and the champion as the service loads it."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from credref.cli.errors import say
from records.warehouse import connect
from settings import load_settings

#: ``--as-of`` where a command's day defaults to the last one the warehouse observes.
ObservedDay = Annotated[
    str | None,
    typer.Option("--as-of", help="As-of date (default: the last day the warehouse observes)."),
]

# Logs (CI, pipes) get a wide fixed width; a terminal keeps its own.
console = Console() if sys.stdout.isatty() else Console(width=160)


def parse_date(value: str) -> date:
    """A YYYY-MM-DD option, or a usage error naming the expected form."""
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError as e:
        raise typer.BadParameter(f"{value!r} is not a date in YYYY-MM-DD form") from e


class JsonLines(logging.Formatter):
    """One JSON object per log line (CREDREF_LOG_FORMAT=json), for a log collector."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        return json.dumps(line, ensure_ascii=False)


def setup_logging(verbose: bool, form: str = "text") -> None:
    """Log lines on stderr with their time (a cron or timer log reads on its own)."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLines()
        if form == "json"
        else logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z"
        )
    )
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


def fail(message: str) -> None:
    """Say a handled error (one line on stderr) and exit 2 (the usage-error code)."""
    say(message)
    raise typer.Exit(code=2)


def warehouse_ro():
    """The warehouse, read-only; exit 2 if there is none."""
    settings = load_settings()
    try:
        return connect(
            settings.warehouse_path, read_only=True, memory_limit=settings.duckdb_memory_limit
        )
    except FileNotFoundError as e:
        fail(f"{e}{demo_hint(settings.home)}")


#: Where `make demo` keeps its state (the Makefile's DEMO_DIR), and the day its domain ends.
DEMO_HOME, DEMO_TODAY = Path("var/demo"), "2026-09-30"


def demo_hint(home: Path) -> str:
    """How to point a command at the demo's state, when that is what is here and the
    command looked elsewhere (the first thing a newcomer tries after `make demo`)."""
    if (DEMO_HOME / "warehouse.duckdb").exists() and home.resolve() != DEMO_HOME.resolve():
        return (
            f" (home {home}; the demo's state is in {DEMO_HOME}: "
            f"CREDREF_HOME={DEMO_HOME} CREDREF_TODAY={DEMO_TODAY} credref ...)"
        )
    return f" (home {home}: CREDREF_HOME)"


def served_model():
    """The champion as the service loads it (imported into BentoML's store); exit 2 if none."""
    # BentoML and the scoring artefact (LightGBM, SHAP) take seconds to load: only the
    # commands that need the champion pay for them.
    from scoring.served import ModelUnavailable, load_served_model, use_store

    settings = load_settings()
    use_store(settings.bentoml_path)
    try:
        return load_served_model(settings.tracking_uri, settings.registered_model)
    except ModelUnavailable as e:
        fail(str(e))
