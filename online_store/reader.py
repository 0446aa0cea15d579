"""The online store, reader side: the publication the service answers from (written by
:mod:`online_store.publish`).

Embedded default, shared by every worker: one SQLite file in WAL mode,

    <online>/snap-<as-of>-<utc stamp>.sqlite   a full build, then refreshed in place
    <online>/current -> snap-....sqlite        symlink, replaced atomically by a rebuild
    <online>/ledger.jsonl                      every publication ever made
    <online>/rows-<publication>.parquet        the current publication's rows (no identity
                                               fields), what the next refresh compares with

A full publication is written to a temporary file, synced, renamed, and only then does
``current`` switch to it with one ``rename`` (atomic on POSIX). A daily refresh
(:mod:`online_store.incremental`) rewrites only the households whose answer inputs changed,
in one write transaction that also moves the publication's metadata.

A reader takes one publication per request: :meth:`OnlineStore.current` opens a SQLite
read transaction, and WAL gives that transaction one committed state of the file until it
ends, whatever a refresh commits meanwhile; so no answer mixes two publications, and a
refresh killed midway leaves the previous one whole.

Contents (minimum necessity: no readable personal information): per household registered
on the as-of date, its status on that date, keyed hashes of its name, operator name,
address and operator ID number (see :mod:`online_store.verification`), and, for households
operating on that date, the catalogue's features; the four that move with the calendar
alone are kept as their anchor dates and derived for the publication's day on reading
(:mod:`features.elapsed`), so a refresh need not rewrite every household every day.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from features.catalogue import FEATURE_NAMES
from features.elapsed import ANCHORS, CALENDAR, DERIVED, ELAPSED, derive

CURRENT = "current"
#: Full builds kept besides the current one, for readers still finishing a request.
KEEP_PREVIOUS = 1
#: Every publication ever made, one JSON line each (what it was built from).
LEDGER = "ledger.jsonl"
#: The store's layout: 2 = anchors instead of calendar-derived features, WAL, in place.
LAYOUT = "2"
#: The feature columns a publication stores (derived ones come from the anchors).
STORED_FEATURES = tuple(n for n in FEATURE_NAMES if n not in DERIVED)
IDENTITY_HASHES = ("name_h", "operator_h", "address_h", "id_h")
COLUMNS = ("uscc", "status", *IDENTITY_HASHES, *STORED_FEATURES, *ANCHORS)
_CHUNK = 100_000  # codes per query when reading given households


class NoSnapshot(RuntimeError):
    """Nothing has been published to the online store."""


# --- reading -------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """One household as the service sees it (hashes, status, features)."""

    uscc: str
    status: str
    name_h: bytes | None
    operator_h: bytes | None
    address_h: bytes | None
    id_h: bytes | None
    features: dict | None  # None unless operating on the as-of date


def _anchor(v: str | None) -> date | None:
    return None if v is None else date.fromisoformat(v)


class Snapshot:
    """One publication, read inside one read transaction; :meth:`close` ends it."""

    def __init__(self, con: sqlite3.Connection, path: Path, release) -> None:
        self.path = path
        self._con = con
        self._release = release
        self._lock = threading.Lock()
        con.execute("BEGIN")  # deferred: the snapshot is taken by the first read below
        self.meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        if self.meta.get("layout") != LAYOUT:
            self.close()
            raise ValueError(
                f"snapshot {path.name} has an older layout; rebuild it with `credref publish`"
            )
        self.as_of: str = self.meta["as_of"]
        self.day = date.fromisoformat(self.as_of)
        #: The publication's name, as audit rows and the ledger give it.
        self.name: str = self.meta["publication"]
        self.catalogue_version: str = self.meta["catalogue_version"]
        self._select = f"SELECT {', '.join(COLUMNS)} FROM subjects WHERE uscc = ?"

    def _subject(self, row: tuple) -> Subject:
        d = dict(zip(COLUMNS, row, strict=True))
        return Subject(
            d["uscc"],
            d["status"],
            d["name_h"],
            d["operator_h"],
            d["address_h"],
            d["id_h"],
            self._features(d) if d["status"] == "operating" else None,
        )

    def _features(self, d: dict) -> dict | None:
        if d[STORED_FEATURES[0]] is None:
            return None
        derived = derive({a: _anchor(d[a]) for a in ANCHORS}, self.day)
        return {n: derived[n] if n in derived else d[n] for n in FEATURE_NAMES}

    def get(self, uscc: str) -> Subject | None:
        with self._lock:
            row = self._con.execute(self._select, (uscc,)).fetchone()
        return None if row is None else self._subject(row)

    def get_many(self, usccs: list[str]) -> dict[str, Subject]:
        out: dict[str, Subject] = {}
        with self._lock:
            for uscc in dict.fromkeys(usccs):
                row = self._con.execute(self._select, (uscc,)).fetchone()
                if row is not None:
                    out[uscc] = self._subject(row)
        return out

    def frame(self, usccs: list[str] | None = None, day: date | None = None) -> pd.DataFrame:
        """Every household (or those of ``usccs`` found): uscc, status and (operating ones)
        the catalogue's features, column by column (at 11M, one object per household
        would not fit in memory); the calendar-derived ones for ``day`` (default: the
        publication's own: another day gives these records as that day would read them)."""
        day = day or self.day
        cols = ", ".join(("uscc", "status", *STORED_FEATURES, *ANCHORS))
        with self._lock:
            if usccs is None:
                df = pd.read_sql(f"SELECT {cols} FROM subjects ORDER BY uscc", self._con)
            else:  # a JSON array: the reader may not write, not even a temporary table
                parts = [
                    pd.read_sql(
                        f"SELECT {cols} FROM subjects WHERE uscc IN "
                        "(SELECT value FROM json_each(?)) ORDER BY uscc",
                        self._con,
                        params=(json.dumps(usccs[i : i + _CHUNK]),),
                    )
                    for i in range(0, max(len(usccs), 1), _CHUNK)
                ]
                df = pd.concat(parts, ignore_index=True).sort_values("uscc", ignore_index=True)
        operating = ((df["status"] == "operating") & df[STORED_FEATURES[0]].notna()).to_numpy()
        for e in ELAPSED:
            anchors = pd.to_datetime(df[e.anchor], format="ISO8601").to_numpy("datetime64[D]")
            df[e.name] = np.where(operating, e.values(anchors, day), np.nan)
        df[CALENDAR.name] = np.where(operating, float(CALENDAR.value(day)), np.nan)
        for n in STORED_FEATURES:
            df[n] = df[n].where(operating)
        return df[["uscc", "status", *FEATURE_NAMES]]

    def close(self) -> None:
        """End the read transaction (the connection goes back to its store)."""
        if self._con is not None:
            self._con.rollback()
            self._release(self._con)
            self._con = None  # type: ignore[assignment]

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        return {**self.meta, "file": self.path.name}


def open_reader(path: Path) -> sqlite3.Connection:
    """A connection that reads ``path`` and never writes it. Not ``mode=ro``: a WAL
    reader may need to create the shared-memory index, so the guard is ``query_only``."""
    if not path.exists():
        raise FileNotFoundError(path)
    con = sqlite3.connect(
        f"file:{path}?mode=rw", uri=True, check_same_thread=False, isolation_level=None
    )
    con.execute("PRAGMA query_only = ON")
    con.execute("PRAGMA busy_timeout = 5000")
    return con


class OnlineStore:
    """The reader side: follows ``current``, reopening when a new file is published."""

    def __init__(self, root: Path):
        self.root = root
        self._target: str | None = None
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def current(self) -> Snapshot:
        """The current publication; hold it for one request, then :meth:`Snapshot.close`."""
        try:
            target = os.readlink(self.root / CURRENT)
        except FileNotFoundError:
            raise NoSnapshot(
                f"nothing is published in {self.root}; run `credref publish --as-of DATE`"
            ) from None
        with self._lock:
            if target != self._target:
                for old in self._idle:
                    old.close()
                self._idle, self._target = [], target
            idle = self._idle.pop() if self._idle else None
        con = idle if idle is not None else open_reader(self.root / target)
        return Snapshot(con, self.root / target, lambda c: self._give_back(target, c))

    def _give_back(self, target: str, con: sqlite3.Connection) -> None:
        with self._lock:
            if target == self._target and len(self._idle) < 8:
                self._idle.append(con)
                return
        con.close()


def mirror_path(root: Path, publication: str) -> Path:
    """The Parquet copy of a publication's rows (no identity fields): tomorrow's
    refresh reads it instead of recomputing today's publication from the history, and
    the change feed's event step reads the watched households from it."""
    return root / f"rows-{publication}.parquet"


def describe_current(root: Path) -> dict:
    with OnlineStore(root).current() as snap:
        return snap.describe()


def dumps(meta: dict) -> str:
    return json.dumps(meta, indent=2, ensure_ascii=False)


def too_old(age_days: int, max_age_days: int | None) -> bool:
    """Past the allowed age, a publication may still count a penalty repaired or a
    publicity ended since: answering from it would be silent use of such records."""
    return max_age_days is not None and age_days > max_age_days
