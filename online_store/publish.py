"""The online store, writer side: a full publication built from the warehouse and made
current atomically (the layout and the reader are in :mod:`online_store.reader`; the daily
refresh in place is :mod:`online_store.incremental`).

A full publication is written to a temporary file, synced, renamed, and only then does
``current`` switch to it with one ``rename`` (atomic on POSIX). The previous file is kept
(``KEEP_PREVIOUS``) so in-flight readers can finish.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from features.catalogue import catalogue_version
from features.elapsed import ANCHORS
from features.pit import publication_sql
from online_store.reader import (
    COLUMNS,
    CURRENT,
    IDENTITY_HASHES,
    KEEP_PREVIOUS,
    LAYOUT,
    LEDGER,
    STORED_FEATURES,
    mirror_path,
)
from online_store.verification import FieldHasher
from records.changeset import knowledge_date
from records.progress import track
from records.warehouse import source_fingerprint

logger = logging.getLogger(__name__)

_BATCH_ROWS = 100_000
_PII_FIELDS = (("name", "name_h"), ("operator_name", "operator_h"), ("address", "address_h"))


def _sqlite_type(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "INTEGER"
    if pa.types.is_floating(t):
        return "REAL"
    return "TEXT"


def publication_meta(con: duckdb.DuckDBPyConnection, as_of: date, **counts: int) -> dict:
    """What a publication records of itself (also its ledger line)."""
    known = knowledge_date(con)
    stamp = datetime.now(UTC)
    return {
        "publication": f"{as_of.isoformat()}-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}",
        "as_of": as_of.isoformat(),
        # what the warehouse knew: the publication is its records as known on this day
        "known_through": known.isoformat() if known else "",
        "catalogue_version": catalogue_version(),
        "source_fingerprint": source_fingerprint(con),
        "published_at": stamp.isoformat(timespec="seconds"),
        "layout": LAYOUT,
        **{k: str(v) for k, v in counts.items()},
    }


def publish(
    con: duckdb.DuckDBPyConnection, as_of: date, root: Path, secret: bytes, progress: bool = False
) -> dict:
    """Build the whole publication of ``as_of`` from the warehouse and make it current."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}.sqlite"
    n = con.execute(
        f"SELECT count(*) FROM households WHERE registered_on <= DATE '{as_of}'"
    ).fetchall()[0][0]
    reader = con.sql(publication_sql(as_of)).to_arrow_reader(_BATCH_ROWS)
    try:
        out = _create(tmp, reader.schema)
        batches = track(reader, -(-n // _BATCH_ROWS), progress, "publish")
        rows, operating = write_rows(out, batches, FieldHasher(secret))
        meta = publication_meta(con, as_of, households=rows, operating=operating)
        record_in_ledger(root, meta)  # before it can be answered from: every answer replays
        final = _finish(out, tmp, root, meta)
    finally:
        tmp.unlink(missing_ok=True)
    # the first refresh compares with this instead of recomputing it from the history
    write_mirror(
        con, publication_sql(as_of, identity=False), mirror_path(root, meta["publication"])
    )
    keep_only_mirror(root, meta["publication"])
    _prune(root)
    logger.info("published %s households (%s operating) as of %s", rows, operating, as_of)
    return {**meta, "file": final.name, "kind": "full"}


def write_mirror(warehouse: duckdb.DuckDBPyConnection, sql: str, path: Path) -> None:
    warehouse.execute(f"COPY ({sql}) TO '{path.as_posix()}' (FORMAT parquet, COMPRESSION zstd)")


def keep_only_mirror(root: Path, publication: str | None) -> None:
    """Remove every mirror but ``publication``'s, and any a killed refresh left."""
    keep = mirror_path(root, publication).name if publication else None
    for p in [*root.glob("rows-*.parquet"), *root.glob(".rows-*.parquet")]:
        if p.name != keep:
            p.unlink(missing_ok=True)


def _create(path: Path, schema: pa.Schema) -> sqlite3.Connection:
    types = {n: _sqlite_type(schema.field(n).type) for n in STORED_FEATURES}
    out = sqlite3.connect(path)
    out.execute("PRAGMA journal_mode=OFF")
    out.execute("PRAGMA synchronous=OFF")
    out.execute(
        "CREATE TABLE subjects (uscc TEXT PRIMARY KEY, status TEXT NOT NULL, "
        + ", ".join(f"{h} BLOB" for h in IDENTITY_HASHES)
        + ", "
        + ", ".join(f"{n} {types[n]}" for n in STORED_FEATURES)
        + ", "
        + ", ".join(f"{a} TEXT" for a in ANCHORS)
        + ") WITHOUT ROWID"
    )
    return out


def _iso(values: list) -> list:
    return [None if v is None else v.isoformat() for v in values]


def rows_of(batch: pa.RecordBatch, hasher: FieldHasher) -> Iterable[tuple]:
    """The store's rows of a batch of :func:`features.pit.publication_sql` (personal
    fields hashed, never stored readable) or of :func:`in_store_form`; anchors as ISO
    dates."""
    data = batch.to_pydict()
    return zip(
        data["uscc"],
        data["status"],
        *identity_hashes(data, hasher),
        *(data[n] for n in STORED_FEATURES),
        *(_iso(data[a]) for a in ANCHORS),
        strict=True,
    )


def identity_hashes(data: dict, hasher: FieldHasher) -> list[list]:
    """The columns :data:`IDENTITY_HASHES` of a batch's columns: its personal fields
    hashed, or taken as they are when the batch holds them already hashed (a difference
    shared by the refresh host, :mod:`online_store.changes`)."""
    if IDENTITY_HASHES[0] in data:
        return [data[h] for h in IDENTITY_HASHES]
    hashed = [
        [hasher.field(kind, v) for v in data[source]]
        for kind, (source, _) in zip(("name", "operator", "address"), _PII_FIELDS, strict=True)
    ]
    ids = [None if v is None else bytes.fromhex(v) for v in data["operator_id_hmac"]]
    return [*hashed, ids]


def in_store_form(rows: pa.Table, hasher: FieldHasher) -> pa.Table:
    """``rows`` (a refresh's difference) with their personal fields replaced by the
    store's keyed hashes: what may leave the refresh host for the serving hosts."""
    personal = [source for source, _ in _PII_FIELDS] + ["operator_id_hmac"]
    hashes = identity_hashes(rows.select(personal).to_pydict(), hasher)
    out = rows.drop_columns(personal)
    for name, values in zip(IDENTITY_HASHES, hashes, strict=True):
        out = out.append_column(name, pa.array(values, pa.binary()))
    return out


def write_rows(out: sqlite3.Connection, batches, hasher: FieldHasher) -> tuple[int, int]:
    """Insert (or replace) every household of ``batches``; rows and operating."""
    insert = f"INSERT OR REPLACE INTO subjects VALUES ({', '.join('?' * len(COLUMNS))})"
    rows = operating = 0
    for batch in batches:
        out.executemany(insert, rows_of(batch, hasher))
        rows += batch.num_rows
        first = batch.column(batch.schema.get_field_index(STORED_FEATURES[0]))
        operating += batch.num_rows - first.null_count
    return rows, operating


def _finish(out: sqlite3.Connection, tmp: Path, root: Path, meta: dict) -> Path:
    """Write the metadata, turn WAL on, sync, rename into place and switch ``current``."""
    out.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    out.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    out.commit()
    out.execute("PRAGMA journal_mode=WAL")  # kept in the file: refreshes write in place
    out.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    final = root / f"snap-{meta['publication']}.sqlite"
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


def record_in_ledger(root: Path, entry: dict) -> None:
    """One line per publication, kept when its file is pruned: what it was built from,
    so an audited answer can be rebuilt (``online_store.replay``). Written before the
    publication can be read; a publication killed before it is made leaves a line no
    audit row names."""
    with (root / LEDGER).open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _prune(root: Path, keep: int = KEEP_PREVIOUS) -> None:
    """Remove all but ``keep`` full builds besides the current one (and their WAL files)."""
    current = os.readlink(root / CURRENT)
    # by when they were published (the name's stamp), not by their as-of date: a rebuild
    # of an earlier day must not remove the file readers were answering from a moment ago
    snaps = sorted(
        (p for p in root.glob("snap-*.sqlite") if p.name != current),
        key=lambda p: p.stem.rsplit("-", 1)[-1],
    )
    for old in snaps[: max(0, len(snaps) - keep)]:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{old}{suffix}").unlink(missing_ok=True)
