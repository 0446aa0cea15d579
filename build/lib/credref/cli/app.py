"""The ``credref`` command: every command registered on one Typer app, in the order
``credref --help`` lists them. The commands live by subject beside this module."""

from __future__ import annotations

from typing import Annotated

import typer

from credref.cli import data, models, ops, refresh, serve, validate
from credref.cli.common import setup_logging

app = typer.Typer(
    help="credref: credit-risk reference scoring on regulator data.", no_args_is_help=True
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """credref: credit-risk reference scoring on regulator data."""
    setup_logging(verbose)


for command in (data.generate, data.ingest, data.history, data.summary):
    app.command()(command)
app.command()(data.dataset)
app.command()(data.features)
for command in (models.train, models.promote, models.impact, models.rollback):
    app.command()(command)
app.command()(serve.publish)
app.command()(serve.serve)
app.command("score-all")(serve.score_all)
app.command("model-files")(models.model_files)
app.command()(models.monitor)
app.add_typer(ops.keys_app, name="keys")
app.add_typer(ops.audit_app, name="audit")
app.command()(refresh.refresh)
app.command("refresh-plan")(refresh.refresh_plan)
app.command()(validate.validate)
