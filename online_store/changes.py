"""A day's difference, computed once and applied by every serving host.

On several hosts (docs/deployment.md) the refresh host keeps the warehouse and computes
each day's difference once; every serving host applies it to its own copy of the
publication with ``credref refresh --changes DIR``. Two writers, one folder layout
(``rows/`` as Parquet and :data:`MANIFEST`):

* ``credref refresh --share DIR`` on the refresh host (DuckDB, as part of its own
  refresh): the changed rows in the store's form, personal fields already replaced by
  their keyed hashes (the folder holds nothing readable the store does not), and the
  record of the publication they make (:func:`online_store.publish.publication_meta`).
  Every host applying it publishes that same publication: the same name, counts and
  ledger line, so an audited answer replays on any host, and a serving host needs no
  warehouse. A host whose counts differ after applying refuses it (its copy has drifted);
* ``spark-submit online_store/spark_refresh.py`` (a cluster): the changed rows as the
  difference query gives them; the applying host hashes them and names the publication
  from its own warehouse.

A host applies a folder only if it was computed from the publication the host has
(``before``); otherwise :class:`StaleChanges`, and nothing is published.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from online_store.publish import in_store_form
from online_store.verification import FieldHasher

#: Written next to the changed rows: the publication they were computed against.
MANIFEST = "refresh.json"
ROWS = "rows"


class StaleChanges(ValueError):
    """Changes computed against another publication, or for another day."""


@dataclass(frozen=True)
class SharedChanges:
    """A folder's changed rows, the day they bring the publication to, and (when the
    refresh host published them) the record of the publication they make."""

    rows: pa.Table
    as_of: date
    made: dict | None


def write_changes(
    folder: Path, rows: pa.Table, before: str, made: dict, hasher: FieldHasher
) -> Path:
    """Write the day's difference for the other hosts (replacing a previous run's)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}-{uuid.uuid4().hex}")
    (tmp / ROWS).mkdir(parents=True)
    pq.write_table(in_store_form(rows, hasher), tmp / ROWS / "part-0.parquet")
    manifest = {
        "before": before,
        "as_of": made["as_of"],
        "rows": rows.num_rows,
        "engine": "duckdb",
        "publication": made,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if folder.exists():  # a rerun of the day: the new folder replaces the old whole
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def read_changes(folder: Path, before: str, as_of: date | None) -> SharedChanges:
    """The changed rows in ``folder``, refused unless computed from ``before`` (the
    host's current publication) and for ``as_of`` (when given)."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    day = date.fromisoformat(manifest["as_of"])
    if manifest["before"] != before or (as_of is not None and day != as_of):
        raise StaleChanges(
            f"{folder.name} holds the changes from {manifest['before']} to "
            f"{manifest['as_of']}; the current publication is {before}: run it again"
        )
    return SharedChanges(pq.read_table(folder / ROWS), day, manifest.get("publication"))


def is_day_folder(folder: Path) -> bool:
    """One day's difference (else a folder of them, one per day)."""
    return (folder / MANIFEST).is_file()


def days_to_apply(root: Path, current: str) -> list[Path]:
    """The day folders under ``root`` that bring a host from its publication ``current``
    to the refresh host's latest, in order (each starts from the publication the one
    before it makes): a host that missed days catches up in one run. Empty when it holds
    the latest; :class:`StaleChanges` when no folder continues from its publication (its
    copy is from elsewhere: copy the refresh host's publication)."""
    after: dict[str, tuple[Path, str]] = {}  # publication -> the folder leaving it, and where to
    made = set()
    for folder in sorted(p for p in root.iterdir() if is_day_folder(p)):
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("publication"):  # the refresh host's (a cluster run's has none)
            name = manifest["publication"]["publication"]
            after[manifest["before"]] = (folder, name)
            made.add(name)
    chain, at = [], current
    while at in after:
        folder, at = after[at]
        chain.append(folder)
    if not chain and after and current not in made:
        raise StaleChanges(
            f"no shared difference in {root.name} starts from this host's publication "
            f"{current}: copy the refresh host's publication to this host"
        )
    return chain
