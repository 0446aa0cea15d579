"""Daily change sets: one day's new, changed and deleted records.

A change set is a folder (by convention named after its day, ``feed/2026-10-01/``)::

    manifest.json               {"kind": "changeset", "format_version": 1,
                                 "date": "2026-10-01",
                                 "files": {"penalties.parquet": "<sha256>", ...}}
    <table>.parquet | .csv      new and changed rows, in the export's own columns
    <table>.deleted.parquet|csv the natural keys of records entered in error

Every file is listed in the manifest with its SHA-256, so a folder still being copied
or altered since it was sealed is refused before anything is read. Its rows become
known on the manifest's date. Change sets apply in date order: one older than the last
applied, or than what the warehouse already knows, is refused naming both dates; the
same set twice changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from records.schema import TABLES, TABLES_BY_NAME
from records.validate import scalar

MANIFEST = "manifest.json"
KIND = "changeset"
FORMAT_VERSION = 1
DELETED_SUFFIX = ".deleted"


class ChangeSetError(ValueError):
    """The change set cannot be applied as it is (nothing was written)."""


@dataclass(frozen=True)
class ChangeSet:
    folder: Path
    day: date
    digest: str  # SHA-256 of the manifest (which names every file's SHA-256)
    rows: dict[str, Path]  # table -> file of new and changed rows
    deletions: dict[str, Path]  # table -> file of keys to delete


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_changeset(folder: Path) -> bool:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("kind") == KIND
    except (ValueError, AttributeError):
        return False


def _table_of(file_name: str) -> tuple[str, bool] | None:
    """(table, is a deletion file) for a change-set file name, else None."""
    stem, _, ext = file_name.rpartition(".")
    if ext not in ("parquet", "csv"):
        return None
    deleted = stem.endswith(DELETED_SUFFIX)
    name = stem[: -len(DELETED_SUFFIX)] if deleted else stem
    return (name, deleted) if name in TABLES_BY_NAME else None


def read_changeset(folder: Path) -> ChangeSet:
    """Read and verify a change set's manifest and files (nothing is loaded)."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        day = date.fromisoformat(manifest["date"])
        listed: dict[str, str] = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ChangeSetError(
            f"{path}: not a valid change-set manifest ({type(e).__name__})"
        ) from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ChangeSetError(f"{path}: format_version must be {FORMAT_VERSION}")
    present = {p.name for p in folder.iterdir() if p.name != MANIFEST and p.is_file()}
    unlisted = sorted(present - set(listed))
    missing = sorted(set(listed) - present)
    if unlisted or missing:
        raise ChangeSetError(
            f"{folder.name}: files differ from the manifest: missing {missing or 'none'}, "
            f"not listed {unlisted or 'none'}"
        )
    rows: dict[str, Path] = {}
    deletions: dict[str, Path] = {}
    for name, digest in listed.items():
        kind = _table_of(name)
        if kind is None:
            raise ChangeSetError(f"{folder.name}: {name} is not a record or deletion file")
        table, deleted = kind
        target = deletions if deleted else rows
        if table in target:
            raise ChangeSetError(f"{folder.name}: two files for {table}; keep one")
        if sha256(folder / name) != digest:
            raise ChangeSetError(f"{folder.name}: {name} differs from its manifest SHA-256")
        target[table] = folder / name
    return ChangeSet(folder, day, sha256(path), rows, deletions)


def check_order(con: duckdb.DuckDBPyConnection, cs: ChangeSet) -> bool:
    """True if ``cs`` was already applied (same day, same content); raises if it is out
    of order or a different set for an applied day."""
    applied = con.execute(
        "SELECT sha256 FROM _changesets WHERE day = ? LIMIT 1", [cs.day]
    ).fetchall()
    if applied:
        if applied[0][0] == cs.digest:
            return True
        raise ChangeSetError(
            f"a different change set for {cs.day} was already applied; a day's set is "
            "applied once (send the corrections in the next day's set)"
        )
    last = scalar(con, "SELECT max(day) FROM _changesets")
    if last is not None and cs.day < last:
        raise ChangeSetError(
            f"change set {cs.day} is older than the last one applied ({last}); "
            "change sets apply in date order"
        )
    known = knowledge_date(con)
    if known is not None and cs.day < known:
        raise ChangeSetError(
            f"change set {cs.day} is older than what the warehouse already knows "
            f"(versions known on {known})"
        )
    return False


def knowledge_date(con: duckdb.DuckDBPyConnection) -> date | None:
    """The latest day any current or past version became known."""
    parts = " UNION ALL ".join(
        f'SELECT max(known_from) AS d FROM "{t.name}" UNION ALL '
        f'SELECT max(known_to) FROM "{t.name}_history"'
        for t in TABLES
    )
    return scalar(con, f"SELECT max(d) FROM ({parts})")


def write_changeset(
    folder: Path,
    day: date,
    rows: dict[str, pa.Table],
    deletions: dict[str, pa.Table] | None = None,
) -> Path:
    """Write a change set (Parquet files and a sealed manifest) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for tables, suffix in ((rows, ""), (deletions or {}, DELETED_SUFFIX)):
        for name, table in tables.items():
            if name not in TABLES_BY_NAME:
                raise ValueError(f"unknown table {name!r}")
            path = folder / f"{name}{suffix}.parquet"
            pq.write_table(table, path, compression="zstd")
            files[path.name] = sha256(path)
    seal(folder, day, files)
    return folder


def seal(folder: Path, day: date, files: dict[str, str] | None = None) -> None:
    """Write the manifest naming every file in ``folder`` with its SHA-256."""
    if files is None:
        files = {
            p.name: sha256(p)
            for p in sorted(folder.iterdir())
            if p.is_file() and p.name != MANIFEST
        }
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "date": day.isoformat(),
        "files": dict(sorted(files.items())),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
