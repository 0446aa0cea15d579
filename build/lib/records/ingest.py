"""``credref ingest``: load a full export or a day's change set, losing nothing.

A full export is a folder with one file per table (``<table>.parquet`` or ``.csv``,
UTF-8) in the schema's columns; a history export adds ``known_from`` and ``known_to``
to every file (one row per record version). A change set (``records.changeset``) holds
one day's new, changed and deleted records. Each file's columns are checked before
anything is written, and the whole run is one DuckDB transaction: either everything is
applied, or the warehouse is left exactly as it was (a killed run included).

Every row is validated in SQL (``records.validate``); a failing row goes to
``_quarantine`` with its reasons and the raw row. Good rows become record versions
(``records.merge``): nothing is overwritten, a changed record's previous version is
kept in ``<table>_history``. When each version became known:
- a change set's rows: the change set's date;
- a history export's rows: their ``known_from`` and ``known_to``;
- the first plain export of a table: each row's own first public date
  (``Table.known_since``), the documented assumption for exports without knowledge time;
- a later plain export: ``known_on`` (default: the day it is ingested).

A file already loaded (same SHA-256), or a change set already applied, is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from records import merge
from records.changeset import ChangeSet, check_order, is_changeset, read_changeset, sha256
from records.progress import track
from records.schema import TABLES, TABLES_BY_NAME, Table
from records.validate import (
    DELETIONS,
    HISTORY,
    RECORDS,
    FileKind,
    check_file,
    file_columns,
    quarantine_where,
    referenced_households,
    register_udfs,
)
from records.versions import KNOWN_FROM, KNOWN_TO
from records.warehouse import connect

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
    inserted: int  # new records
    replaced: int  # records given a new version (the previous kept in history)
    skipped: bool  # already loaded earlier (same bytes); counts are the earlier load's
    unchanged: int = 0  # rows equal to the current version
    deleted: int = 0  # records closed by a deletion
    kind: str = "export"  # export | history_export | changeset


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


def file_kind(table: Table, path: Path) -> FileKind:
    """Records or history (knowledge columns present); refuses any other column set."""
    cols = file_columns(path)
    has_knowledge = KNOWN_FROM in cols or KNOWN_TO in cols
    kind = HISTORY if has_knowledge else RECORDS
    check_columns(table, path, kind, cols)
    return kind


def check_columns(table: Table, path: Path, kind: FileKind, cols: list[str] | None = None) -> None:
    """Refuse a file whose columns are not exactly those of its kind of file."""
    cols = file_columns(path) if cols is None else cols
    names = [c.name for c in kind.columns(table)]
    optional = {KNOWN_TO} if kind is HISTORY else set()
    missing = [c for c in names if c not in cols and c not in optional]
    unexpected = [c for c in cols if c not in names]
    if missing or unexpected:
        raise ExportError(
            f"{path.name}: columns do not match table {table.name}: "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )


def ingest(
    path: Path,
    warehouse: Path,
    progress: bool = True,
    memory_limit: str | None = None,
    known_on: date | None = None,
) -> list[LoadReport]:
    """Load a full export or apply a change set (``path`` holds its manifest)."""
    if is_changeset(path):
        return _apply_changeset(read_changeset(path), warehouse, progress, memory_limit)
    files = find_files(path)
    kinds = {name: file_kind(TABLES_BY_NAME[name], p) for name, p in files.items()}
    hashes = {name: sha256(p) for name, p in files.items()}
    day = known_on or datetime.now(UTC).date()

    def load(con: duckdb.DuckDBPyConnection, name: str) -> list[LoadReport]:
        t, p = TABLES_BY_NAME[name], files[name]
        return _load_export_file(con, t, p, kinds[name], hashes[name], day)

    return _in_transaction(warehouse, memory_limit, list(files), progress, load)


def _in_transaction(
    warehouse, memory_limit, names, progress, load, finish=None
) -> list[LoadReport]:
    """Run ``load(con, table)`` for each table, then ``finish(con, reports)``, as one
    transaction: on any error (or a kill) nothing of it is kept."""
    con = connect(warehouse, memory_limit=memory_limit)
    register_udfs(con)
    reports: list[LoadReport] = []
    con.execute("BEGIN TRANSACTION")
    try:
        for name in track(names, len(names), progress, "ingesting", lambda n: f"ingesting {n}"):
            reports.extend(load(con, name))
        if finish is not None:
            finish(con, reports)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return reports


def _prior(con: duckdb.DuckDBPyConnection, t: Table, digest: str, name: str) -> LoadReport | None:
    found = con.execute(
        "SELECT read, accepted, quarantined, COALESCE(kind, 'export') FROM _loads "
        "WHERE table_name = ? AND sha256 = ? AND COALESCE(kind, 'export') <> 'changeset'",
        [t.name, digest],
    ).fetchall()
    if not found:
        return None
    read, accepted, quarantined, kind = found[0]
    logger.info("%s: %s already loaded, skipped", t.name, name)
    return LoadReport(t.name, name, read, accepted, quarantined, 0, 0, True, kind=kind)


def _load_export_file(
    con: duckdb.DuckDBPyConnection, t: Table, path: Path, kind: FileKind, digest: str, day: date
) -> list[LoadReport]:
    prior = _prior(con, t, digest, path.name)
    if prior:
        return [prior]
    empty = merge.is_empty(con, t)
    if kind is HISTORY and not empty:
        raise ExportError(
            f"{path.name}: a history export loads only into a table with no versions yet "
            f"({t.name} has some); send later changes as change sets"
        )
    load_id, read, quarantined = check_file(con, t, path, kind, path.name)
    if kind is HISTORY:
        merged, known_on, label = merge.insert_history(con, t), None, "history_export"
    elif empty:
        merged, known_on, label = merge.insert_first(con, t, t.known_since), None, "export"
    else:
        merged, known_on, label = merge.merge(con, t, day), day, "export"
    return [_record(con, load_id, t, path.name, digest, read, quarantined, merged, known_on, label)]


def _apply_changeset(
    cs: ChangeSet, warehouse: Path, progress: bool, memory_limit: str | None
) -> list[LoadReport]:
    names = [t.name for t in TABLES if t.name in cs.rows or t.name in cs.deletions]
    for name in names:
        t = TABLES_BY_NAME[name]
        if name in cs.rows:
            check_columns(t, cs.rows[name], RECORDS)
        if name in cs.deletions:
            check_columns(t, cs.deletions[name], DELETIONS)
    applied: list[bool] = []  # decided once, inside the transaction
    known: list[str] = []  # the relation of households the set's records name

    def load(con: duckdb.DuckDBPyConnection, name: str) -> list[LoadReport]:
        if not applied:
            applied.append(check_order(con, cs))
        if applied[0]:
            return _skipped_changeset(con, cs, name)
        t = TABLES_BY_NAME[name]
        if t.household_fk and not known:  # households, if any, are loaded by now
            paths = [p for n, p in cs.rows.items() if TABLES_BY_NAME[n].household_fk]
            known.append(referenced_households(con, paths))
        out = []
        if name in cs.rows:
            out.append(
                _changeset_rows(con, cs, t, cs.rows[name], known[0] if known else "households")
            )
        if name in cs.deletions:
            out.append(_changeset_deletions(con, cs, t, cs.deletions[name]))
        return out

    def finish(con: duckdb.DuckDBPyConnection, reports: list[LoadReport]) -> None:
        if not applied:  # an empty change set: still a day, in order
            applied.append(check_order(con, cs))
        if not applied[0]:
            con.execute(
                "INSERT INTO _changesets VALUES (?, ?, ?, now())",
                [cs.day, cs.digest, sum(r.read for r in reports)],
            )
            logger.info("change set %s applied (not yet committed)", cs.day)

    return _in_transaction(warehouse, memory_limit, names, progress, load, finish)


def _skipped_changeset(
    con: duckdb.DuckDBPyConnection, cs: ChangeSet, name: str
) -> list[LoadReport]:
    rows = con.execute(
        "SELECT file, read, accepted, quarantined FROM _loads "
        "WHERE kind = 'changeset' AND known_on = ? AND table_name = ?",
        [cs.day, name],
    ).fetchall()
    logger.info("change set %s already applied, skipped", cs.day)
    return [LoadReport(name, f, r, a, q, 0, 0, True, kind="changeset") for f, r, a, q in rows]


def _label(cs: ChangeSet, path: Path) -> str:
    return f"{cs.day.isoformat()}/{path.name}"


def _changeset_rows(con, cs: ChangeSet, t: Table, path: Path, households: str) -> LoadReport:
    label = _label(cs, path)
    load_id, read, quarantined = check_file(con, t, path, RECORDS, label, households)
    merged = merge.merge(con, t, cs.day)
    return _record(
        con,
        load_id,
        t,
        label,
        sha256(path),
        read,
        quarantined,
        merged,
        cs.day,
        "changeset",
    )


def _changeset_deletions(con, cs: ChangeSet, t: Table, path: Path) -> LoadReport:
    label = _label(cs, path)
    load_id, read, quarantined = check_file(con, t, path, DELETIONS, label)
    merge.locate(con, t)
    quarantined += quarantine_where(
        con, load_id, t, path, label, merge.NOT_CURRENT, "deletion: no current record with this key"
    )
    merged = merge.delete(con, t, cs.day)
    return _record(
        con, load_id, t, label, sha256(path), read, quarantined, merged, cs.day, "changeset"
    )


def _record(
    con: duckdb.DuckDBPyConnection,
    load_id: str,
    t: Table,
    name: str,
    digest: str,
    read: int,
    quarantined: int,
    merged: merge.Merged,
    known_on: date | None,
    kind: str,
) -> LoadReport:
    """Write the _loads row for one file and say what happened to it."""
    accepted = read - quarantined
    con.execute(
        "INSERT INTO _loads (load_id, table_name, file, sha256, read, accepted, quarantined, "
        "inserted, replaced, loaded_at, unchanged, deleted, known_on, kind) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?, ?, ?, ?)",
        [
            load_id,
            t.name,
            name,
            digest,
            read,
            accepted,
            quarantined,
            merged.inserted,
            merged.replaced,
            merged.unchanged,
            merged.deleted,
            known_on,
            kind,
        ],
    )
    con.execute("DROP TABLE IF EXISTS _checked")
    if quarantined:
        logger.warning("%s: %d of %d rows quarantined", t.name, quarantined, read)
    logger.info("%s: %d rows read, %d accepted (not yet committed)", t.name, read, accepted)
    return LoadReport(
        t.name,
        name,
        read,
        accepted,
        quarantined,
        merged.inserted,
        merged.replaced,
        False,
        merged.unchanged,
        merged.deleted,
        kind,
    )
