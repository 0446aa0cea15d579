"""The embedded DuckDB warehouse: connection, table definitions, bookkeeping tables."""

from __future__ import annotations

from pathlib import Path

import duckdb

from features.schema import TABLES, Table

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
    inserted     BIGINT  NOT NULL,
    replaced     BIGINT  NOT NULL,
    loaded_at    TIMESTAMP NOT NULL
)"""


def table_ddl(t: Table) -> str:
    cols = ",\n    ".join(f'"{c.name}" {c.type}' for c in t.columns)
    return f'CREATE TABLE IF NOT EXISTS "{t.name}" (\n    {cols}\n)'


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
    con.execute(QUARANTINE_DDL)
    con.execute(LOADS_DDL)
    return con


def source_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """A fingerprint of everything loaded: the hashes of all files ever accepted."""
    import hashlib

    rows = con.execute(
        "SELECT table_name, sha256 FROM _loads ORDER BY table_name, sha256"
    ).fetchall()
    h = hashlib.sha256()
    for table, sha in rows:
        h.update(f"{table}:{sha}\n".encode())
    return h.hexdigest()
