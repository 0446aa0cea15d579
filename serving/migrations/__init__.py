"""The shared database's schema, migrated with Alembic (``credref db upgrade``).

Only the PostgreSQL backend uses it: the embedded SQLite files make their own tables (and
upgrade an older file) when a store opens them. ``tests/test_state.py`` checks that both
engines hold the same tables and columns.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def sqlalchemy_url(url: str) -> str:
    """Alembic speaks SQLAlchemy: the same server through psycopg 3."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("CREDREF_DATABASE_URL must start with postgresql://")


def _config(url: str):
    from alembic.config import Config  # Alembic loads only for a migration or a check

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database's schema to ``revision`` (the code's by default)."""
    from alembic import command  # Alembic loads only for a migration

    command.upgrade(_config(url), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory  # Alembic loads only for a check

    head = ScriptDirectory.from_config(_config("postgresql://")).get_current_head()
    assert head is not None  # the package ships its revisions
    return head


def current_revision(url: str) -> str | None:
    """The database's schema revision (None: never upgraded)."""
    import psycopg  # psycopg loads only with PostgreSQL

    with psycopg.connect(url, connect_timeout=5) as con:
        found = con.execute("SELECT to_regclass('alembic_version')").fetchone()
        if found is None or found[0] is None:
            return None
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None
