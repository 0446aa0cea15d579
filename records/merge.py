"""Apply checked rows to the warehouse as record versions (``records.versions``).

The good rows of ``_checked`` (``records.validate``) are compared with the current
version of the same record by natural key: an equal row changes nothing; a new record
is inserted; a changed one moves its current version to ``<table>_history``, closed on
the new version's ``known_from``, and the new version becomes current. A deletion
closes the current version the same way, without a successor. Only rows that change
something are written, so a day's change set costs what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from records.schema import Table
from records.validate import scalar
from records.versions import KNOWN_FROM, KNOWN_TO, history_name


@dataclass(frozen=True)
class Merged:
    inserted: int = 0  # new records
    replaced: int = 0  # records with a new current version
    unchanged: int = 0  # rows equal to the current version
    deleted: int = 0  # records closed by a deletion


def _q(names) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _key_match(t: Table, a: str, b: str) -> str:
    return " AND ".join(f'{a}."{k}" = {b}."{k}"' for k in t.key)


def is_empty(con: duckdb.DuckDBPyConnection, t: Table) -> bool:
    """No version of any record of ``t`` yet (current or past)."""
    return not scalar(
        con,
        f'SELECT EXISTS (SELECT 1 FROM "{t.name}") OR EXISTS (SELECT 1 FROM "{history_name(t)}")',
    )


def insert_first(con: duckdb.DuckDBPyConnection, t: Table, known_from: str) -> Merged:
    """The first load of a table: every good row is a new record (nothing to compare)."""
    cols = _q(t.column_names)
    n = scalar(con, "SELECT count(*) FROM _checked WHERE _reason IS NULL")
    con.execute(
        f'INSERT INTO "{t.name}" ({cols}, {KNOWN_FROM}) '
        f"SELECT {cols}, {known_from} FROM _checked WHERE _reason IS NULL"
    )
    return Merged(inserted=n)


def insert_history(con: duckdb.DuckDBPyConnection, t: Table) -> Merged:
    """A history export's versions, as given: open ones current, closed ones past."""
    cols = _q(t.column_names)
    good = "FROM _checked WHERE _reason IS NULL"
    con.execute(
        f'INSERT INTO "{t.name}" ({cols}, {KNOWN_FROM}) '
        f"SELECT {cols}, {KNOWN_FROM} {good} AND {KNOWN_TO} IS NULL"
    )
    con.execute(
        f'INSERT INTO "{history_name(t)}" ({cols}, {KNOWN_FROM}, {KNOWN_TO}) '
        f"SELECT {cols}, {KNOWN_FROM}, {KNOWN_TO} {good} AND {KNOWN_TO} IS NOT NULL"
    )
    current = scalar(con, f"SELECT count(*) {good} AND {KNOWN_TO} IS NULL")
    past = scalar(con, f"SELECT count(*) {good} AND {KNOWN_TO} IS NOT NULL")
    return Merged(inserted=current, replaced=past)


_GOOD = "(SELECT * FROM _checked WHERE _reason IS NULL)"


def locate(con: duckdb.DuckDBPyConnection, t: Table) -> None:
    """``_located(_row, _rid)``: for each good row of ``_checked``, the rowid of the
    current version with its key. The one read of the table by key, and it reads only
    the key columns; everything after goes by rowid, which skips the rest."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _located AS
        SELECT a._row, w.rowid AS _rid FROM {_GOOD} a JOIN "{t.name}" w ON {_key_match(t, "a", "w")}"""
    )


def merge(con: duckdb.DuckDBPyConnection, t: Table, known_on: date) -> Merged:
    """New and changed rows become current versions known from ``known_on``."""
    day = f"DATE '{known_on.isoformat()}'"
    same = " AND ".join(f'a."{c}" IS NOT DISTINCT FROM w."{c}"' for c in t.column_names)
    locate(con, t)
    current = (
        f'(SELECT rowid AS _rid, * FROM "{t.name}" WHERE rowid IN (SELECT _rid FROM _located))'
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _incoming AS
        SELECT {", ".join(f'a."{c}"' for c in t.column_names)}, l._rid,
               l._rid IS NOT NULL AS _present,
               COALESCE(l._rid IS NOT NULL AND {same}, false) AS _same
        FROM {_GOOD} a LEFT JOIN _located l ON l._row = a._row
        LEFT JOIN {current} w ON w._rid = l._rid"""
    )
    counts = con.execute(
        "SELECT count(*) FILTER (NOT _present), count(*) FILTER (_present AND NOT _same), "
        "count(*) FILTER (_same) FROM _incoming"
    ).fetchall()[0]
    inserted, replaced, unchanged = (int(x) for x in counts)
    if replaced:
        _close(con, t, "SELECT _rid FROM _incoming WHERE _present AND NOT _same", day)
    if inserted or replaced:
        cols = _q(t.column_names)
        con.execute(
            f'INSERT INTO "{t.name}" ({cols}, {KNOWN_FROM}) '
            f"SELECT {cols}, {day} FROM _incoming WHERE NOT _same"
        )
    con.execute("DROP TABLE _incoming")
    con.execute("DROP TABLE _located")
    return Merged(inserted, replaced, unchanged)


def delete(con: duckdb.DuckDBPyConnection, t: Table, known_on: date) -> Merged:
    """Close the current versions named by the good rows of ``_checked`` (keys only);
    :func:`locate` has run, and rows naming no current record were quarantined."""
    day = f"DATE '{known_on.isoformat()}'"
    n = scalar(con, "SELECT count(*) FROM _located")
    if n:
        _close(con, t, "SELECT _rid FROM _located", day)
    con.execute("DROP TABLE _located")
    return Merged(deleted=n)


#: For ``records.validate.quarantine_where`` after :func:`locate`: the row ``c`` names
#: no current record.
NOT_CURRENT = "c._row NOT IN (SELECT _row FROM _located)"


def _close(con: duckdb.DuckDBPyConnection, t: Table, rowids_sql: str, day: str) -> None:
    """Move the current versions with the rowids ``rowids_sql`` lists to history, closed
    on ``day``."""
    cols = _q(t.column_names)
    where = f"rowid IN ({rowids_sql})"
    con.execute(
        f'INSERT INTO "{history_name(t)}" ({cols}, {KNOWN_FROM}, {KNOWN_TO}) '
        f'SELECT {cols}, {KNOWN_FROM}, {day} FROM "{t.name}" WHERE {where}'
    )
    con.execute(f'DELETE FROM "{t.name}" WHERE {where}')
