"""Alembic's entry: run the migrations on the URL the caller configured (online only)."""

from alembic import context
from sqlalchemy import create_engine, pool


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "serving.migrations sets the URL"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


# Alembic executes this file inside its migration context; imported anywhere else (a
# scan of the package), it does nothing.
if getattr(context, "config", None) is not None:
    run_migrations()
