"""The online store: the published snapshot the service answers from.

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
import logging
import os
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from features.catalogue import FEATURE_NAMES, catalogue_version
from features.pit import feature_sql, status_sql
from features.progress import track
from features.warehouse import source_fingerprint
from serving.verification import FieldHasher

logger = logging.getLogger(__name__)

CURRENT = "current"
KEEP_PREVIOUS = 2
_BATCH_ROWS = 100_000
_PII_FIELDS = (("name", "name_h"), ("operator_name", "operator_h"), ("address", "address_h"))


class NoSnapshot(RuntimeError):
    """Nothing has been published to the online store."""


def _sqlite_type(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "INTEGER"
    if pa.types.is_floating(t):
        return "REAL"
    return "TEXT"


def _publish_sql(as_of: date) -> str:
    feats = ", ".join(f"f.{n}" for n in FEATURE_NAMES)
    return f"""
    SELECT st.uscc, st.status_on AS status, h.name, h.operator_name, h.operator_id_hmac,
           h.address, {feats}
    FROM ({status_sql(as_of)}) st
    JOIN households h ON h.uscc = st.uscc
    LEFT JOIN ({feature_sql(as_of)}) f ON f.uscc = st.uscc
    ORDER BY st.uscc
    """


def publish(
    con: duckdb.DuckDBPyConnection, as_of: date, root: Path, secret: bytes, progress: bool = False
) -> dict:
    """Build the snapshot of ``as_of`` from the warehouse and make it current atomically."""
    root.mkdir(parents=True, exist_ok=True)
    hasher = FieldHasher(secret)
    tmp = root / f".tmp-{uuid.uuid4().hex}.sqlite"
    n = con.execute(
        f"SELECT count(*) FROM households WHERE registered_on <= DATE '{as_of}'"
    ).fetchall()[0][0]
    fingerprint = source_fingerprint(con)
    reader = con.sql(_publish_sql(as_of)).to_arrow_reader(_BATCH_ROWS)
    schema = reader.schema
    feature_types = {n: _sqlite_type(schema.field(n).type) for n in FEATURE_NAMES}
    columns = ["uscc", "status", "name_h", "operator_h", "address_h", "id_h", *FEATURE_NAMES]
    try:
        out = sqlite3.connect(tmp)
        out.execute("PRAGMA journal_mode=OFF")
        out.execute("PRAGMA synchronous=OFF")
        out.execute(
            "CREATE TABLE subjects (uscc TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "name_h BLOB, operator_h BLOB, address_h BLOB, id_h BLOB, "
            + ", ".join(f"{n} {feature_types[n]}" for n in FEATURE_NAMES)
            + ") WITHOUT ROWID"
        )
        insert = f"INSERT INTO subjects VALUES ({', '.join('?' * len(columns))})"
        rows = operating = 0
        for batch in track(reader, -(-n // _BATCH_ROWS), progress, "publish"):
            data = batch.to_pydict()
            hashed = {
                target: [hasher.field(kind, v) for v in data[source]]
                for kind, (source, target) in zip(
                    ("name", "operator", "address"), _PII_FIELDS, strict=True
                )
            }
            ids = [None if v is None else bytes.fromhex(v) for v in data["operator_id_hmac"]]
            out.executemany(
                insert,
                zip(
                    data["uscc"],
                    data["status"],
                    hashed["name_h"],
                    hashed["operator_h"],
                    hashed["address_h"],
                    ids,
                    *(data[n] for n in FEATURE_NAMES),
                    strict=True,
                ),
            )
            rows += batch.num_rows
            operating += sum(v is not None for v in data[FEATURE_NAMES[0]])
        meta = {
            "as_of": as_of.isoformat(),
            "catalogue_version": catalogue_version(),
            "source_fingerprint": fingerprint,
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "households": str(rows),
            "operating": str(operating),
        }
        out.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        out.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        out.commit()
        out.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = root / f"snap-{as_of.isoformat()}-{stamp}.sqlite"
        os.replace(tmp, final)
        _switch_current(root, final.name)
    finally:
        tmp.unlink(missing_ok=True)
    _prune(root)
    logger.info("published %s households (%s operating) as of %s", rows, operating, as_of)
    return {**meta, "file": final.name}


def _switch_current(root: Path, name: str) -> None:
    link = root / f".link-{uuid.uuid4().hex}"
    os.symlink(name, link)
    os.replace(link, root / CURRENT)
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _prune(root: Path) -> None:
    current = os.readlink(root / CURRENT)
    snaps = sorted(p for p in root.glob("snap-*.sqlite") if p.name != current)
    for old in snaps[: max(0, len(snaps) - KEEP_PREVIOUS)]:
        old.unlink(missing_ok=True)


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
