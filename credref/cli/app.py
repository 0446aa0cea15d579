"""The ``credref`` command: every command registered on one Typer app, in the order
``credref --help`` lists them. The commands live by subject beside this module."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

import credref
from credref.cli import data, db, errors, household, models, ops, refresh, serve, validate
from credref.cli.common import setup_logging
from settings import load_settings

app = typer.Typer(
    help="credref: credit-risk reference scoring on regulator data.",
    no_args_is_help=True,
    # An error is one line (credref.cli.errors); -v shows Python's own traceback.
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"credref {credref.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress details; show tracebacks.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """credref: credit-risk reference scoring on regulator data."""
    # every setting checked before any work: a wrong one is one line (credref.cli.errors)
    setup_logging(verbose, load_settings().log_format)
    # MLflow draws a progress bar for every artefact it fetches (a model, a report): in a
    # log they are noise; the commands say what they fetched.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow logs its store's set-up at INFO, through its own handler: -v shows it.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "WARNING")


def run() -> None:
    """The ``credref`` command (and ``python -m credref``)."""
    errors.run(app, sys.argv)


for command in (data.generate, data.ingest, data.history, data.summary):
    app.command()(command)
app.command()(data.dataset)
app.command()(data.features)
for command in (models.train, models.promote, models.impact, models.rollback, models.relocate):
    app.command()(command)
app.command()(serve.publish)
app.command()(serve.serve)
app.command("score-all")(serve.score_all)
app.command("model-files")(models.model_files)
app.command()(models.monitor)
app.add_typer(ops.keys_app, name="keys")
app.add_typer(ops.audit_app, name="audit")
app.add_typer(db.db_app, name="db")
app.add_typer(household.household_app, name="household")
app.add_typer(household.objection_app, name="objection")
app.command()(refresh.refresh)
app.command("refresh-plan")(refresh.refresh_plan)
app.command()(validate.validate)
