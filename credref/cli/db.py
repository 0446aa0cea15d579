"""``credref db``: the shared database's schema (PostgreSQL, CREDREF_DATABASE_URL)."""

from __future__ import annotations

import typer

from credref.cli.common import console, fail
from settings import Settings, load_settings

db_app = typer.Typer(
    help="The shared PostgreSQL database of several serving hosts (CREDREF_DATABASE_URL).",
    no_args_is_help=True,
)


def _url(s: Settings) -> str:
    if s.database_url is not None:
        return s.database_url.get_secret_value()
    fail(
        "CREDREF_DATABASE_URL is not set: the stores are SQLite files under the home, "
        "which make their own tables"
    )
    raise AssertionError("fail() ends the command")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database's schema to this credref's (Alembic; safe to run again)."""
    from serving.migrations import current_revision, head_revision, upgrade  # Alembic

    url = _url(load_settings())
    before = current_revision(url)
    upgrade(url)
    after = head_revision()
    said = "already at" if before == after else f"from {before or 'nothing'} to"
    console.print(f"database schema {said} revision {after}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision and this credref's; exit 1 if they differ."""
    from serving.migrations import current_revision, head_revision  # Alembic

    url = _url(load_settings())
    found, head = current_revision(url), head_revision()
    console.print(f"database: {found or 'no schema'}; this credref: {head}")
    if found != head:
        raise typer.Exit(1)
