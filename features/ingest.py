"""``credref ingest``: load a regulator export into the warehouse, losing nothing.

Each table's file (``<table>.parquet`` or ``<table>.csv``, UTF-8) is checked column by
column before anything is written: a file whose columns differ from the schema is
refused, naming the missing and unexpected columns. The whole run is then one DuckDB
transaction: either every file is loaded, or the warehouse is left exactly as it was.

Every row is validated in SQL (types, required fields, enumerations, USCC check
character via python-stdnum, date order, table rules, duplicate keys, unknown
households). A failing row goes to ``_quarantine`` with file, row number, every reason
and the raw row; the rest is upserted by natural key, so a later export's corrections
(a restoration, a repair) replace the earlier rows. A file already loaded (same SHA-256)
is skipped: re-ingesting the same export adds nothing.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from features.codes import uscc_problems
from features.progress import track
from features.schema import TABLES, TABLES_BY_NAME, Column, Table
from features.warehouse import connect

logger = logging.getLogger(__name__)


class ExportError(ValueError):
    """The export cannot be loaded as it is (nothing was written)."""


@dataclass(frozen=True)
class LoadReport:
    """What happened to one file. ``read == accepted + quarantined`` always holds."""

    table: str
    file: str
    read: int
    accepted: int
    quarantined: int
    inserted: int
    replaced: int
    skipped: bool  # already loaded earlier (same bytes); counts are the earlier load's


def find_files(export_dir: Path) -> dict[str, Path]:
    """The file for each table present in an export folder."""
    if not export_dir.is_dir():
        raise ExportError(f"export folder not found: {export_dir}")
    found: dict[str, Path] = {}
    for t in TABLES:
        candidates = [
            p
            for p in (export_dir / f"{t.name}.parquet", export_dir / f"{t.name}.csv")
            if p.exists()
        ]
        if len(candidates) > 1:
            raise ExportError(f"{t.name}: both a .parquet and a .csv file; keep one")
        if candidates:
            found[t.name] = candidates[0]
    if not found:
        names = ", ".join(f"{t.name}.parquet|csv" for t in TABLES)
        raise ExportError(f"no record files in {export_dir} (expected some of: {names})")
    return found


def file_columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return list(pq.read_schema(path).names)
    rel = duckdb.sql(
        f"SELECT * FROM read_csv('{_sql_str(path)}', header=true, all_varchar=true) LIMIT 0"
    )
    assert rel is not None  # a SELECT always gives a relation
    return list(rel.columns)


def check_columns(table: Table, path: Path) -> None:
    """Refuse a file whose columns are not exactly the table's."""
    cols = file_columns(path)
    expected = set(table.column_names)
    missing = [c for c in table.column_names if c not in cols]
    unexpected = [c for c in cols if c not in expected]
    if missing or unexpected:
        raise ExportError(
            f"{path.name}: columns do not match table {table.name}: "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ingest(
    export_dir: Path, warehouse: Path, progress: bool = True, memory_limit: str | None = None
) -> list[LoadReport]:
    """Validate and load every table file of an export in one transaction."""
    files = find_files(export_dir)
    for name, path in files.items():
        check_columns(TABLES_BY_NAME[name], path)
    hashes = {name: sha256(path) for name, path in files.items()}

    con = connect(warehouse, memory_limit=memory_limit)
    _register_udfs(con)
    reports: list[LoadReport] = []
    con.execute("BEGIN TRANSACTION")
    try:
        for name, path in track(
            files.items(), len(files), progress, "ingesting", lambda f: f"ingesting {f[0]}"
        ):
            reports.append(_load_file(con, TABLES_BY_NAME[name], path, hashes[name]))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return reports


def _sql_str(path: Path | str) -> str:
    return str(path).replace("'", "''")


def _reader(path: Path) -> str:
    if path.suffix == ".parquet":
        return f"SELECT file_row_number + 1 AS _row, * EXCLUDE (file_row_number) FROM read_parquet('{_sql_str(path)}', file_row_number=true)"
    return (
        f"SELECT row_number() OVER () AS _row, * FROM read_csv('{_sql_str(path)}', header=true, "
        "all_varchar=true, encoding='utf-8')"
    )


_ARROW_NATIVE = {
    "VARCHAR": ("string", "large_string"),
    "DATE": ("date32[day]",),
    "INTEGER": ("int32",),
    "BIGINT": ("int64",),
    "DOUBLE": ("double",),
    "BOOLEAN": ("bool",),
}


def _native_columns(path: Path, t: Table) -> set[str]:
    """Parquet columns already stored with the schema's type (no text round trip)."""
    if path.suffix != ".parquet":
        return set()
    schema = pq.read_schema(path)
    return {c.name for c in t.columns if str(schema.field(c.name).type) in _ARROW_NATIVE[c.type]}


def _raw(c: Column, native: set[str]) -> str:
    """The column as read, with blanks as NULL."""
    if c.name in native and c.type != "VARCHAR":
        return f's."{c.name}"'
    return f"NULLIF(trim(CAST(s.\"{c.name}\" AS VARCHAR)), '')"


def _typed(c: Column, native: set[str]) -> str:
    q = f'"{c.name}"'
    if c.name in native and c.type != "VARCHAR":
        return q
    if c.type == "VARCHAR":
        return f"NULLIF(trim(CAST({q} AS VARCHAR)), '')"
    if c.type == "BOOLEAN":
        return f"TRY_CAST(NULLIF(trim(CAST({q} AS VARCHAR)), '') AS BOOLEAN)"
    return f"TRY_CAST(NULLIF(trim(CAST({q} AS VARCHAR)), '') AS {c.type})"


def _problems(t: Table) -> list[str]:
    """SQL expressions over one checked row ``x``, each NULL when good or a reason when bad.

    ``x."<col>"`` is the typed value, ``x."__has_<col>"`` whether the file had a value.
    """
    out = []
    for c in t.columns:
        v, has = f'x."{c.name}"', f'x."__has_{c.name}"'
        if c.type != "VARCHAR":
            out.append(
                f"CASE WHEN {has} AND {v} IS NULL THEN '{c.name}: not a valid {c.type.lower()}' END"
            )
        if c.required:
            out.append(f"CASE WHEN NOT {has} THEN '{c.name}: required' END")
        if c.enum and c.list_sep:
            allowed = ", ".join(f"'{e}'" for e in c.enum)
            out.append(
                f"CASE WHEN {v} IS NOT NULL AND len(list_filter(string_split({v}, '{c.list_sep}'), "
                f"lambda x: x NOT IN ({allowed}))) > 0 THEN '{c.name}: contains a value not in the allowed list' END"
            )
        elif c.enum:
            allowed = ", ".join(f"'{e}'" for e in c.enum)
            out.append(
                f"CASE WHEN {v} IS NOT NULL AND {v} NOT IN ({allowed}) THEN '{c.name}: not an allowed value' END"
            )
    for later, earlier in t.date_order:
        out.append(f'CASE WHEN x."{later}" < x."{earlier}" THEN \'{later}: before {earlier}\' END')
    for cond, reason in t.checks:
        expr = cond
        for c in t.columns:
            expr = _qualify(expr, c.name)
        out.append(f"CASE WHEN COALESCE({expr}, false) THEN '{reason}' END")
    if t.name == "households":
        out.append("uscc_problem(x.uscc)")
    if t.household_fk:
        out.append(
            "CASE WHEN x.uscc IS NOT NULL AND h.uscc IS NULL THEN 'uscc: unknown household' END"
        )
    keys = ", ".join(f'x."{k}"' for k in t.key)
    out.append(
        f"CASE WHEN row_number() OVER (PARTITION BY {keys} ORDER BY x._row) > 1 THEN 'duplicate key in file' END"
    )
    return out


def _qualify(expr: str, col: str) -> str:
    import re

    return re.sub(rf"(?<![\w.\"']){col}(?![\w\"'])", f'x."{col}"', expr)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str):
    # fetchall, not fetchone: DuckDB refuses further work while a result is half-read
    return con.execute(sql).fetchall()[0][0]


def _load_file(con: duckdb.DuckDBPyConnection, t: Table, path: Path, digest: str) -> LoadReport:
    found = con.execute(
        "SELECT read, accepted, quarantined FROM _loads WHERE table_name = ? AND sha256 = ?",
        [t.name, digest],
    ).fetchall()
    prior = found[0] if found else None
    if prior:
        logger.info("%s: %s already loaded, skipped", t.name, path.name)
        return LoadReport(t.name, path.name, prior[0], prior[1], prior[2], 0, 0, True)

    load_id = uuid.uuid4().hex
    native = _native_columns(path, t)
    typed = ", ".join(
        f'{_typed(c, native)} AS "{c.name}", ({_raw(c, native)} IS NOT NULL) AS "__has_{c.name}"'
        for c in t.columns
    )
    has_cols = ", ".join(f'"__has_{c.name}"' for c in t.columns)
    join_h = "LEFT JOIN households h ON h.uscc = x.uscc" if t.household_fk else ""
    reasons = ",\n ".join(_problems(t))
    # One pass over the file: types and every rule; only this result is materialised.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _checked AS
        SELECT * EXCLUDE ({has_cols}) FROM (
            SELECT x.*, NULLIF(concat_ws('; ', {reasons}), '') AS _reason
            FROM (SELECT s._row, {typed} FROM ({_reader(path)}) s) x {join_h}
        )"""
    )
    read = _scalar(con, "SELECT count(*) FROM _checked")
    # The raw row is read again only for the quarantined ones.
    con.execute(
        f"""INSERT INTO _quarantine
        SELECT ?, ?, ?, q._row, q._reason, to_json(s)::VARCHAR
        FROM ({_reader(path)}) s
        JOIN (SELECT _row, _reason FROM _checked WHERE _reason IS NOT NULL) q USING (_row)""",
        [load_id, t.name, path.name],
    )
    quarantined = _scalar(con, "SELECT count(*) FROM _checked WHERE _reason IS NOT NULL")

    key_match = " AND ".join(f'w."{k}" = a."{k}"' for k in t.key)
    has_rows = _scalar(con, f'SELECT count(*) > 0 FROM (SELECT 1 FROM "{t.name}" LIMIT 1)')
    replaced = 0
    if has_rows:
        replaced = _scalar(
            con,
            f'SELECT count(*) FROM "{t.name}" w WHERE EXISTS (SELECT 1 FROM _checked a WHERE a._reason IS NULL AND {key_match})',
        )
        if replaced:
            con.execute(
                f'DELETE FROM "{t.name}" w WHERE EXISTS (SELECT 1 FROM _checked a WHERE a._reason IS NULL AND {key_match})'
            )
    cols = ", ".join(f'"{c}"' for c in t.column_names)
    con.execute(
        f'INSERT INTO "{t.name}" ({cols}) SELECT {cols} FROM _checked WHERE _reason IS NULL'
    )
    accepted = read - quarantined
    con.execute(
        "INSERT INTO _loads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [
            load_id,
            t.name,
            path.name,
            digest,
            read,
            accepted,
            quarantined,
            accepted - replaced,
            replaced,
        ],
    )
    con.execute("DROP TABLE _checked")
    if quarantined:
        logger.warning("%s: %d of %d rows quarantined", t.name, quarantined, read)
    logger.info("%s: %d rows read, %d accepted (not yet committed)", t.name, read, accepted)
    return LoadReport(
        t.name, path.name, read, accepted, quarantined, accepted - replaced, replaced, False
    )


def _uscc_problem(codes: pa.Array) -> pa.Array:
    # Vectorised, equal to stdnum's check code for code (features.codes.uscc_problems).
    return uscc_problems(codes)


def _register_udfs(con: duckdb.DuckDBPyConnection) -> None:
    con.create_function(  # type: ignore[call-overload]  # stubs want the enum; the string is documented
        "uscc_problem",
        _uscc_problem,
        ["VARCHAR"],
        "VARCHAR",
        type="arrow",
        null_handling="special",
        side_effects=False,
    )
