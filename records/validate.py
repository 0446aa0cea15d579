"""Row checks for one file of an export or a change set, in SQL, losing nothing.

Every row is typed and checked (required fields, enumerations, USCC check character,
date order, table rules, duplicate keys, unknown households). The checked rows land in
the temporary table ``_checked`` with ``_reason`` NULL for a good row; every bad row is
copied to ``_quarantine`` with the file, its row number, every reason and the raw row.

Three kinds of file share these checks:
- a record file (``<table>.parquet|csv``): the table's columns;
- a history file: the same plus ``known_from`` (required) and ``known_to`` (optional),
  one row per version (``records.versions``);
- a deletion file (``<table>.deleted.parquet|csv``): the table's key columns only.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from records.codes import uscc_problems
from records.schema import Column, Table
from records.versions import KNOWN_FROM, KNOWN_TO

#: The knowledge-time columns a history export adds to a table's own.
KNOWLEDGE_COLUMNS = (
    Column(KNOWN_FROM, "DATE", "Day credref learnt this version.", True),
    Column(KNOWN_TO, "DATE", "Day this version stopped being current; empty if current."),
)


@dataclass(frozen=True)
class FileKind:
    """What a file holds: whole rows, rows with knowledge time, or keys to delete."""

    name: str  # records | history | deletions

    def columns(self, t: Table) -> tuple[Column, ...]:
        if self.name == "deletions":
            return tuple(t.column(k) for k in t.key)
        if self.name == "history":
            return (*t.columns, *KNOWLEDGE_COLUMNS)
        return t.columns


RECORDS, HISTORY, DELETIONS = FileKind("records"), FileKind("history"), FileKind("deletions")


def sql_str(path: Path | str) -> str:
    return str(path).replace("'", "''")


class UnreadableFile(ValueError):
    """A record file that is not what its suffix says (cut short, another format)."""


def file_columns(path: Path) -> list[str]:
    """The file's column names; :class:`UnreadableFile` naming the file if it cannot be read
    (the reader's own message is not repeated: a CSV reader's may quote a row)."""
    try:
        if path.suffix == ".parquet":
            return list(pq.read_schema(path).names)
        rel = duckdb.sql(
            f"SELECT * FROM read_csv('{sql_str(path)}', header=true, all_varchar=true) LIMIT 0"
        )
        assert rel is not None  # a SELECT always gives a relation
        return list(rel.columns)
    except (OSError, pa.ArrowException, duckdb.Error) as e:
        kind = path.suffix.removeprefix(".")
        raise UnreadableFile(f"{path.name}: not a readable {kind} file ({type(e).__name__})") from e


def reader_sql(path: Path) -> str:
    if path.suffix == ".parquet":
        return f"SELECT file_row_number + 1 AS _row, * EXCLUDE (file_row_number) FROM read_parquet('{sql_str(path)}', file_row_number=true)"
    return (
        f"SELECT row_number() OVER () AS _row, * FROM read_csv('{sql_str(path)}', header=true, "
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


def _native_columns(path: Path, columns: tuple[Column, ...]) -> set[str]:
    """Parquet columns already stored with the schema's type (no text round trip)."""
    if path.suffix != ".parquet":
        return set()
    schema = pq.read_schema(path)
    return {c.name for c in columns if str(schema.field(c.name).type) in _ARROW_NATIVE[c.type]}


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


def _column_problems(columns: tuple[Column, ...]) -> list[str]:
    out = []
    for c in columns:
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
    return out


def _row_rules(t: Table) -> list[str]:
    out = []
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
    return out


def _key_rules(t: Table, kind: FileKind) -> list[str]:
    keys = ", ".join(f'x."{k}"' for k in t.key)
    if kind is not HISTORY:
        return [
            f"CASE WHEN row_number() OVER (PARTITION BY {keys} ORDER BY x._row) > 1 "
            "THEN 'duplicate key in file' END"
        ]
    versions = f"PARTITION BY {keys} ORDER BY x.{KNOWN_FROM}, x._row"
    return [
        f"CASE WHEN row_number() OVER (PARTITION BY {keys}, x.{KNOWN_FROM} ORDER BY x._row) > 1 "
        "THEN 'duplicate key and known_from in file' END",
        f"CASE WHEN x.{KNOWN_TO} < x.{KNOWN_FROM} THEN 'known_to: before known_from' END",
        f"CASE WHEN lead(x.{KNOWN_FROM}) OVER ({versions}) < COALESCE(x.{KNOWN_TO}, DATE '9999-12-31') "
        "THEN 'known_to: overlaps the next version of this record' END",
    ]


def problems_sql(t: Table, kind: FileKind) -> list[str]:
    """SQL expressions over one checked row ``x``, each NULL when good or a reason when bad.

    ``x."<col>"`` is the typed value, ``x."__has_<col>"`` whether the file had a value.
    A deletion names a key only: its columns are checked, not the record's rules."""
    out = _column_problems(kind.columns(t))
    if kind is not DELETIONS:
        out += _row_rules(t)
    return out + _key_rules(t, kind)


def _qualify(expr: str, col: str) -> str:
    return re.sub(rf"(?<![\w.\"']){col}(?![\w\"'])", f'x."{col}"', expr)


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    # fetchall, not fetchone: DuckDB refuses further work while a result is half-read
    return con.execute(sql, params or []).fetchall()[0][0]


def check_file(
    con: duckdb.DuckDBPyConnection,
    t: Table,
    path: Path,
    kind: FileKind,
    label: str,
    households: str = "households",
) -> tuple[str, int, int]:
    """Type and check every row of ``path`` into ``_checked``; quarantine the bad ones.

    Returns (load id, rows read, rows quarantined). ``label`` names the file in
    ``_quarantine`` (for a change set, with its date). ``households``: the relation of
    known households (a change set passes the few its files name, see
    :func:`referenced_households`)."""
    load_id = uuid.uuid4().hex
    columns = kind.columns(t)
    native = _native_columns(path, columns)
    typed = ", ".join(
        f'{_typed(c, native)} AS "{c.name}", ({_raw(c, native)} IS NOT NULL) AS "__has_{c.name}"'
        for c in columns
    )
    has_cols = ", ".join(f'"__has_{c.name}"' for c in columns)
    join_h = (
        f"LEFT JOIN {households} h ON h.uscc = x.uscc"
        if t.household_fk and kind is not DELETIONS
        else ""
    )
    reasons = ",\n ".join(problems_sql(t, kind))
    # One pass over the file: types and every rule; only this result is materialised.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _checked AS
        SELECT * EXCLUDE ({has_cols}) FROM (
            SELECT x.*, NULLIF(concat_ws('; ', {reasons}), '') AS _reason
            FROM (SELECT s._row, {typed} FROM ({reader_sql(path)}) s) x {join_h}
        )"""
    )
    read = scalar(con, "SELECT count(*) FROM _checked")
    # The raw row is read again only for the quarantined ones.
    con.execute(
        f"""INSERT INTO _quarantine
        SELECT ?, ?, ?, q._row, q._reason, to_json(s)::VARCHAR
        FROM ({reader_sql(path)}) s
        JOIN (SELECT _row, _reason FROM _checked WHERE _reason IS NOT NULL) q USING (_row)""",
        [load_id, t.name, label],
    )
    quarantined = scalar(con, "SELECT count(*) FROM _checked WHERE _reason IS NOT NULL")
    return load_id, read, quarantined


def quarantine_where(
    con: duckdb.DuckDBPyConnection,
    load_id: str,
    t: Table,
    path: Path,
    label: str,
    bad_when: str,
    reason: str,
) -> int:
    """Quarantine the good rows of ``_checked`` for which ``bad_when`` holds: a rule that
    needs the warehouse, such as "a deletion names a current record". Returns how many."""
    bad = f"SELECT _row FROM _checked c WHERE c._reason IS NULL AND ({bad_when})"
    n = scalar(con, f"SELECT count(*) FROM ({bad})")
    if n:
        con.execute(
            f"""INSERT INTO _quarantine
            SELECT ?, ?, ?, q._row, ?, to_json(s)::VARCHAR
            FROM ({reader_sql(path)}) s JOIN ({bad}) q USING (_row)""",
            [load_id, t.name, label, reason],
        )
        con.execute(f"UPDATE _checked SET _reason = ? WHERE _row IN ({bad})", [reason])
    return n


def referenced_households(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> str:
    """``_referenced``: the known households that ``paths`` name, found with one read of
    the households table instead of one per file. Returns the relation's name."""
    codes = " UNION ".join(
        f"SELECT NULLIF(trim(CAST(uscc AS VARCHAR)), '') AS uscc FROM ({reader_sql(p)})"
        for p in paths
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _referenced AS "
        f"SELECT h.uscc FROM households h WHERE h.uscc IN ({codes or 'SELECT NULL'})"
    )
    return "_referenced"


def _uscc_problem(codes: pa.Array) -> pa.Array:
    # Vectorised, equal to stdnum's check code for code (records.codes.uscc_problems).
    return uscc_problems(codes)


def register_udfs(con: duckdb.DuckDBPyConnection) -> None:
    con.create_function(  # type: ignore[call-overload]  # stubs want the enum; the string is documented
        "uscc_problem",
        _uscc_problem,
        ["VARCHAR"],
        "VARCHAR",
        type="arrow",
        null_handling="special",
        side_effects=False,
    )
