"""The online store, writer side: a publication built from the warehouse and made
current atomically (the layout and the reader are in :mod:`serving.online`).

A publication is written to a temporary file, synced, renamed, and only then does
``current`` switch to it with one ``rename`` (atomic on POSIX). The two previous files
are kept so in-flight readers can finish.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from features.catalogue import FEATURE_NAMES, catalogue_version
from features.changeset import knowledge_date
from features.pit import feature_sql, status_sql
from features.progress import track
from features.warehouse import source_fingerprint
from serving.online import CURRENT, KEEP_PREVIOUS, LEDGER
from serving.verification import FieldHasher

logger = logging.getLogger(__name__)

_BATCH_ROWS = 100_000
_PII_FIELDS = (("name", "name_h"), ("operator_name", "operator_h"), ("address", "address_h"))
COLUMNS = ["uscc", "status", "name_h", "operator_h", "address_h", "id_h", *FEATURE_NAMES]


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
    """  # no ORDER BY: the table is keyed by uscc, and sorting 11M wide rows (names and
    # addresses before hashing) was what ran out of memory under an 8 GB cap


def publish(
    con: duckdb.DuckDBPyConnection, as_of: date, root: Path, secret: bytes, progress: bool = False
) -> dict:
    """Build the snapshot of ``as_of`` from the warehouse and make it current atomically."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}.sqlite"
    n = con.execute(
        f"SELECT count(*) FROM households WHERE registered_on <= DATE '{as_of}'"
    ).fetchall()[0][0]
    fingerprint = source_fingerprint(con)
    reader = con.sql(_publish_sql(as_of)).to_arrow_reader(_BATCH_ROWS)
    try:
        out = _create(tmp, reader.schema)
        batches = track(reader, -(-n // _BATCH_ROWS), progress, "publish")
        rows, operating = _write_subjects(out, batches, FieldHasher(secret))
        known = knowledge_date(con)
        meta = {
            "as_of": as_of.isoformat(),
            # what the warehouse knew: the publication is its records as known on this day
            "known_through": known.isoformat() if known else "",
            "catalogue_version": catalogue_version(),
            "source_fingerprint": fingerprint,
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "households": str(rows),
            "operating": str(operating),
        }
        final = _finish(out, tmp, root, meta)
    finally:
        tmp.unlink(missing_ok=True)
    _record_in_ledger(root, {**meta, "publication": final.stem})
    _prune(root)
    logger.info("published %s households (%s operating) as of %s", rows, operating, as_of)
    return {**meta, "file": final.name}


def _create(path: Path, schema: pa.Schema) -> sqlite3.Connection:
    feature_types = {n: _sqlite_type(schema.field(n).type) for n in FEATURE_NAMES}
    out = sqlite3.connect(path)
    out.execute("PRAGMA journal_mode=OFF")
    out.execute("PRAGMA synchronous=OFF")
    out.execute(
        "CREATE TABLE subjects (uscc TEXT PRIMARY KEY, status TEXT NOT NULL, "
        "name_h BLOB, operator_h BLOB, address_h BLOB, id_h BLOB, "
        + ", ".join(f"{n} {feature_types[n]}" for n in FEATURE_NAMES)
        + ") WITHOUT ROWID"
    )
    return out


def _write_subjects(out: sqlite3.Connection, batches, hasher: FieldHasher) -> tuple[int, int]:
    """Hash the personal fields (never stored readable) and insert; rows and operating."""
    insert = f"INSERT INTO subjects VALUES ({', '.join('?' * len(COLUMNS))})"
    rows = operating = 0
    for batch in batches:
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
    return rows, operating


def _finish(out: sqlite3.Connection, tmp: Path, root: Path, meta: dict) -> Path:
    """Write the metadata, sync, rename into place and switch ``current`` to it."""
    out.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    out.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    out.commit()
    out.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = root / f"snap-{meta['as_of']}-{stamp}.sqlite"
    os.replace(tmp, final)
    _switch_current(root, final.name)
    return final


def _switch_current(root: Path, name: str) -> None:
    link = root / f".link-{uuid.uuid4().hex}"
    os.symlink(name, link)
    os.replace(link, root / CURRENT)
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _record_in_ledger(root: Path, entry: dict) -> None:
    """One line per publication, kept when its file is pruned: what it was built from,
    so an audited answer can be rebuilt (``serving.replay``)."""
    with (root / LEDGER).open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _prune(root: Path) -> None:
    current = os.readlink(root / CURRENT)
    snaps = sorted(p for p in root.glob("snap-*.sqlite") if p.name != current)
    for old in snaps[: max(0, len(snaps) - KEEP_PREVIOUS)]:
        old.unlink(missing_ok=True)
