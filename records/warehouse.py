"""The embedded DuckDB warehouse: connection, table definitions, bookkeeping tables.

Each record table holds the current version of its records and ``<table>_history``
the versions replaced or deleted since (``records.versions``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb

from records.schema import TABLES, Table
from records.versions import KNOWN_FROM, KNOWN_TO, history_name

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS _quarantine (
    load_id     VARCHAR NOT NULL,  -- the _loads row that read it
    table_name  VARCHAR NOT NULL,
    file        VARCHAR NOT NULL,
    row_number  BIGINT  NOT NULL,  -- 1-based data row in the file (header excluded)
    reason      VARCHAR NOT NULL,  -- every rule the row broke, '; '-separated
    record      VARCHAR NOT NULL   -- the row as read, JSON
)"""

LOADS_DDL = """
CREATE TABLE IF NOT EXISTS _loads (
    load_id      VARCHAR NOT NULL,
    table_name   VARCHAR NOT NULL,
    file         VARCHAR NOT NULL,
    sha256       VARCHAR NOT NULL,
    read         BIGINT  NOT NULL,
    accepted     BIGINT  NOT NULL,
    quarantined  BIGINT  NOT NULL,
    inserted     BIGINT  NOT NULL,  -- new records
    replaced     BIGINT  NOT NULL,  -- records with a new version (the old one kept in history)
    loaded_at    TIMESTAMP NOT NULL,
    unchanged    BIGINT,            -- rows equal to the current version (nothing written)
    deleted      BIGINT,            -- records closed by a deletion
    known_on     DATE,              -- knowledge day given to the rows; NULL: their own dates
    kind         VARCHAR            -- export | history_export | changeset
)"""

#: Columns added to _loads after the first release (old warehouses get them on open).
_LOADS_ADDED = ("unchanged BIGINT", "deleted BIGINT", "known_on DATE", "kind VARCHAR")

CHANGESETS_DDL = """
CREATE TABLE IF NOT EXISTS _changesets (
    day         DATE    NOT NULL,  -- the change set's date: its rows are known from this day
    sha256      VARCHAR NOT NULL,  -- of its manifest, which holds every file's SHA-256
    rows        BIGINT  NOT NULL,  -- rows read, deletions included
    applied_at  TIMESTAMP NOT NULL
)"""


def table_ddl(t: Table) -> str:
    """The current versions: the record's columns and the day each version became known."""
    cols = ",\n    ".join(f'"{c.name}" {c.type}' for c in t.columns)
    return f'CREATE TABLE IF NOT EXISTS "{t.name}" (\n    {cols},\n    {KNOWN_FROM} DATE\n)'


def history_ddl(t: Table) -> str:
    """Replaced and deleted versions, with the day each stopped being current."""
    cols = ",\n    ".join(f'"{c.name}" {c.type}' for c in t.columns)
    return (
        f'CREATE TABLE IF NOT EXISTS "{history_name(t)}" (\n    {cols},\n'
        f"    {KNOWN_FROM} DATE NOT NULL,\n    {KNOWN_TO} DATE NOT NULL\n)"
    )


def _upgrade(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a warehouse made before knowledge time up to date, in place.

    Its rows become current versions known since their own dates (the assumption for
    an export without knowledge time), and _loads gains its later columns."""
    for t in TABLES:
        cols = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                [t.name],
            ).fetchall()
        }
        if KNOWN_FROM not in cols:
            con.execute(f'ALTER TABLE "{t.name}" ADD COLUMN {KNOWN_FROM} DATE')
            con.execute(f'UPDATE "{t.name}" SET {KNOWN_FROM} = {t.known_since}')
    for col in _LOADS_ADDED:
        con.execute(f"ALTER TABLE _loads ADD COLUMN IF NOT EXISTS {col}")


def connect(
    path: Path, read_only: bool = False, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (creating it and its tables unless read-only).

    ``memory_limit`` (e.g. "8GB") caps DuckDB's memory; beyond it DuckDB spills to
    ``<warehouse>.tmp``.
    """
    config = {"memory_limit": memory_limit} if memory_limit else {}
    # Beyond the limit DuckDB spills here; named explicitly because a read-only
    # connection (publish, snapshots) has no spill folder otherwise and fails instead.
    config["temp_directory"] = str(path) + ".tmp"
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"no warehouse at {path}; run `credref ingest` first")
        return duckdb.connect(str(path), read_only=True, config=config)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), config=config)
    for t in TABLES:
        con.execute(table_ddl(t))
        con.execute(history_ddl(t))
    con.execute(QUARANTINE_DDL)
    con.execute(LOADS_DDL)
    con.execute(CHANGESETS_DDL)
    _upgrade(con)
    return con


def source_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """A fingerprint of everything loaded: the hashes of all files ever accepted."""

    rows = con.execute(
        "SELECT table_name, sha256 FROM _loads ORDER BY table_name, sha256"
    ).fetchall()
    h = hashlib.sha256()
    for table, sha in rows:
        h.update(f"{table}:{sha}\n".encode())
    return h.hexdigest()
