"""``credref history USCC``: every version of one household's records, for analysts.

What credref knew about the household and when: each version of each record with its
``known_from`` and ``known_to`` (empty while current). Personal fields (operator name,
ID-number HMAC, address, name) are never shown; a change to one of them appears as a
version whose shown values did not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from records.schema import TABLES, Table
from records.versions import KNOWN_FROM, KNOWN_TO, history_name


@dataclass(frozen=True)
class Version:
    table: str
    key: str  # the natural key, without the USCC
    known_from: date | None
    known_to: date | None
    values: str  # "column=value" for the non-personal, non-key columns that are set


def _shown(t: Table) -> list[str]:
    return [c.name for c in t.columns if not c.pii and c.name not in t.key]


def _versions(con: duckdb.DuckDBPyConnection, t: Table, uscc: str) -> list[Version]:
    keys = [k for k in t.key if k != "uscc"]
    shown = _shown(t)
    cols = ", ".join(f'"{c}"' for c in (*keys, *shown))
    sql = (
        f'SELECT {cols}, {KNOWN_FROM}, NULL::DATE AS {KNOWN_TO} FROM "{t.name}" WHERE uscc = ? '
        f'UNION ALL SELECT {cols}, {KNOWN_FROM}, {KNOWN_TO} FROM "{history_name(t)}" WHERE uscc = ?'
    )
    out = []
    for row in con.execute(sql, [uscc, uscc]).fetchall():
        key_vals, vals = row[: len(keys)], row[len(keys) : len(keys) + len(shown)]
        out.append(
            Version(
                t.name,
                ", ".join(f"{k}={v}" for k, v in zip(keys, key_vals, strict=True)) or "-",
                row[-2],
                row[-1],
                ", ".join(f"{c}={v}" for c, v in zip(shown, vals, strict=True) if v is not None),
            )
        )
    return out


def household_history(con: duckdb.DuckDBPyConnection, uscc: str) -> list[Version]:
    """Every version of every record of ``uscc``, by table, key and knowledge time."""
    rows = [v for t in TABLES for v in _versions(con, t, uscc)]
    order = {t.name: i for i, t in enumerate(TABLES)}
    return sorted(
        rows,
        key=lambda v: (order[v.table], v.key, v.known_from or date.min, v.known_to or date.max),
    )
