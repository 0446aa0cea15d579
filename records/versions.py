"""Knowledge time: every version of every record, and the records as known on a day.

Each record table is system-versioned the way SQL:2011 temporal tables are: the table
itself (``penalties``) holds the current version of every record, and
``<table>_history`` (``penalties_history``) every version that was replaced or deleted.
Both carry ``known_from``, the day credref learnt that version; a history row also
carries ``known_to``, the day it stopped being current. Nothing is overwritten or
removed: a correction moves the old version to the history table and inserts the new.

Because the current versions stay in the table of the record's own name, every query
that reads ``penalties`` reads "what is known now". :func:`source_ctes` gives the same
names as of an earlier day K, for the feature SQL to be run unchanged as known at K.

Days, not timestamps: a change set is one day's changes, so a version known from day
D is visible in every answer "as known at" D or later (the end of day D).
"""

from __future__ import annotations

from datetime import date

from records.schema import TABLES, Table

KNOWN_FROM = "known_from"
KNOWN_TO = "known_to"


def history_name(t: Table) -> str:
    return f"{t.name}_history"


def _day(d: date) -> str:
    return f"DATE '{d.isoformat()}'"


def known_at_sql(t: Table, known_at: date) -> str:
    """The versions of ``t`` that were current at the end of day ``known_at``.

    Same columns as the current table, so any query over ``t`` runs on it as it is."""
    cols = ", ".join(f'"{c}"' for c in (*t.column_names, KNOWN_FROM))
    k = _day(known_at)
    return (
        f'SELECT {cols} FROM "{t.name}" WHERE {KNOWN_FROM} <= {k} '
        f'UNION ALL SELECT {cols} FROM "{history_name(t)}" '
        f"WHERE {KNOWN_FROM} <= {k} AND {KNOWN_TO} > {k}"
    )


def source_ctes(known_at: date | None) -> dict[str, str]:
    """CTEs named like the record tables, holding them as known at ``known_at``.

    Placed first in a WITH list they shadow the tables (DuckDB and Spark both resolve a
    name to the CTE before the table, and a CTE reading its own name reads the table),
    so the feature SQL needs no second copy. ``None`` means "as known now": no CTEs."""
    if known_at is None:
        return {}
    return {t.name: known_at_sql(t, known_at) for t in TABLES}


def learnt_since_sql(day: date) -> str:
    """Every household with a version of any of its records learnt after ``day``: a new
    record, a correction, or a deletion (the version it ended is in the history)."""
    k = _day(day)
    return "\n    UNION ".join(
        f'SELECT uscc FROM "{t.name}" WHERE {KNOWN_FROM} > {k} '
        f'UNION SELECT uscc FROM "{history_name(t)}" WHERE {KNOWN_TO} > {k}'
        for t in TABLES
    )


def only_households(sources: dict[str, str], only: str) -> dict[str, str]:
    """Every record table (as ``sources`` gives it, else as it is) cut to the households
    in the relation ``only`` (a column ``uscc``): the same query, for those alone."""
    out = {}
    for t in TABLES:
        source = sources.get(t.name, f'SELECT * FROM "{t.name}"')
        out[t.name] = f"SELECT * FROM ({source}) WHERE uscc IN (SELECT uscc FROM {only})"
    return out


def with_sources(
    ctes: dict[str, str], select: str, known_at: date | None, only: str | None = None
) -> str:
    """``WITH <sources as known at K>, <ctes> <select>``; ``only``: the name of a relation
    of households (``uscc``) the sources are cut to."""
    sources = source_ctes(known_at)
    if only is not None:
        sources = only_households(sources, only)
    every = {**sources, **ctes}
    if not every:
        return select
    body = ",\n    ".join(f'"{name}" AS ({sql})' for name, sql in every.items())
    return f"WITH {body}\n    {select}"
