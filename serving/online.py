"""The online store, reader side: the published snapshot the service answers from
(written by :mod:`serving.publish`).

Embedded default, shared by every worker: one immutable SQLite file per publication,

    <online>/snap-<as-of>-<utc stamp>.sqlite   written once, never changed
    <online>/current -> snap-....sqlite        symlink, replaced atomically

A publication is written to a temporary file, synced, renamed, and only then does
``current`` switch to it with one ``rename`` (atomic on POSIX). A reader resolves
``current`` once per request and answers the whole request from that one file, so no
answer mixes two snapshots; files are opened read-only and ``immutable``, so lookups take
no locks. The two previous files are kept so in-flight readers can finish.

Contents (minimum necessity: no readable personal information): per household registered
on the as-of date, its status on that date, keyed hashes of its name, operator name,
address and operator ID number (see :mod:`serving.verification`), and, for households
operating on that date, the catalogue's features.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from features.catalogue import FEATURE_NAMES

CURRENT = "current"
KEEP_PREVIOUS = 2
#: Every publication ever made, one JSON line each (what it was built from).
LEDGER = "ledger.jsonl"


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


class Snapshot:
    """One published file, read-only."""

    def __init__(self, path: Path):
        self.path = path
        self._con = sqlite3.connect(
            f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False
        )
        self._lock = threading.Lock()
        self.meta = dict(self._con.execute("SELECT key, value FROM meta").fetchall())
        self.as_of: str = self.meta["as_of"]
        self.catalogue_version: str = self.meta["catalogue_version"]
        cols = [r[1] for r in self._con.execute("PRAGMA table_info(subjects)").fetchall()]
        missing = [n for n in FEATURE_NAMES if n not in cols]
        if missing:
            raise ValueError(f"snapshot {path.name} lacks catalogue features: {missing}")
        self._select = f"SELECT {', '.join(cols)} FROM subjects WHERE uscc = ?"
        self._cols = cols

    def _subject(self, row: tuple) -> Subject:
        d = dict(zip(self._cols, row, strict=True))
        operating = d["status"] == "operating" and d[FEATURE_NAMES[0]] is not None
        return Subject(
            d["uscc"],
            d["status"],
            d["name_h"],
            d["operator_h"],
            d["address_h"],
            d["id_h"],
            {n: d[n] for n in FEATURE_NAMES} if operating else None,
        )

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

    def close(self) -> None:
        self._con.close()

    def describe(self) -> dict:
        return {**self.meta, "file": self.path.name}


class OnlineStore:
    """The reader side: follows ``current``, reopening when a new snapshot is published."""

    def __init__(self, root: Path):
        self.root = root
        self._target: str | None = None
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def current(self) -> Snapshot:
        """The current snapshot; hold on to it for the whole of one request."""
        try:
            target = os.readlink(self.root / CURRENT)
        except FileNotFoundError:
            raise NoSnapshot(
                f"nothing is published in {self.root}; run `credref publish --as-of DATE`"
            ) from None
        with self._lock:
            if target != self._target or self._snapshot is None:
                self._snapshot = Snapshot(self.root / target)
                self._target = target
            return self._snapshot


def describe_current(root: Path) -> dict:
    snap = OnlineStore(root).current()
    try:
        return snap.describe()
    finally:
        snap.close()


def dumps(meta: dict) -> str:
    return json.dumps(meta, indent=2, ensure_ascii=False)
