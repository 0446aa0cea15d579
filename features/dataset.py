"""Training sets (stacked labelled snapshots) and scoring snapshots, with manifests.

A training set holds, per as-of date, every household operating on it: the catalogue's
features, the label, and — in a separate column that model code never takes as input —
the generator's oracle PD, for evaluation only. Only as-of dates whose whole label window
is observed in the warehouse may be labelled.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from datetime import date, timedelta
from enum import Enum
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.catalogue import catalogue_version
from features.engines import DuckDBEngine
from features.pit import feature_sql
from records.policy import Policy
from records.progress import track
from records.warehouse import source_fingerprint

logger = logging.getLogger(__name__)


class KnownAt(Enum):
    """Which record versions a training snapshot at T sees."""

    AS_OF = "as-of"  # those known on T: what production would have seen (the default)
    NOW = "now"  # those known today, corrections and late entries included (measurement)

    def day(self, as_of: date) -> date | None:
        return as_of if self is KnownAt.AS_OF else None


#: Evaluation-only columns of a training set: never model inputs.
ORACLE_COLUMN = "oracle_pd"
LABEL_COLUMN = "label"


def month_end(year: int, month: int) -> date:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return date.fromordinal(nxt.toordinal() - 1)


def month_end_back(d: date, months: int) -> date:
    """The end of the month ``months`` before ``d``'s month."""
    m = d.year * 12 + d.month - 1 - months
    return month_end(m // 12, m % 12 + 1)


def parse_every(every: str) -> int:
    """'3M' -> 3 (months)."""
    m = re.fullmatch(r"\s*(\d+)\s*M\s*", every, flags=re.IGNORECASE)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"--every must look like '3M' (a number of months), got {every!r}")
    return int(m.group(1))


def as_of_dates(start: date, end: date, every_months: int) -> list[date]:
    """Month ends from ``start`` to ``end`` stepping ``every_months``; start must be a month end."""
    if start != month_end(start.year, start.month):
        raise ValueError(f"as-of dates are month ends; {start} is not one")
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    out, y, m = [], start.year, start.month
    while (d := month_end(y, m)) <= end:
        out.append(d)
        m += every_months
        y, m = y + (m - 1) // 12, (m - 1) % 12 + 1
    return out


def observed_through(con: duckdb.DuckDBPyConnection) -> date:
    """The last day the warehouse has records for (latest publication of any kind)."""
    row = con.execute(
        """SELECT max(d) FROM (
            SELECT max(published_on) AS d FROM penalties
            UNION ALL SELECT max(marked_on) FROM abnormal_status
            UNION ALL SELECT max(changed_on) FROM registration_changes
            UNION ALL SELECT max(listed_on) FROM serious_dishonesty
            UNION ALL SELECT max(published_on) FROM spot_checks
            UNION ALL SELECT max(filed_on) FROM annual_reports)"""
    ).fetchall()[0]
    if row[0] is None:
        raise ValueError("the warehouse holds no records; run `credref ingest` first")
    return row[0]


def months_later(d: date, months: int) -> date:
    """The same day ``months`` later, or that month's last day when it is shorter (as
    DuckDB's ``d + INTERVAL n MONTH`` in the label SQL)."""
    m = d.year * 12 + d.month - 1 + months
    year, month = m // 12, m % 12 + 1
    return date(year, month, min(d.day, month_end(year, month).day))


def labelable(as_of: date, horizon_months: int, through: date) -> bool:
    """An as-of date whose whole label window ends on or before ``through``."""
    return months_later(as_of, horizon_months) <= through


def dense_dates(dates: list[date], until: date) -> tuple[list[date], dict[date, float]]:
    """The month ends ``dates``, with the first day of the next month added for those up
    to ``until`` (the day after the month end must itself be on or before ``until``), and
    the share of households each of them keeps: half for the dense ones, all for the rest.

    Month ends alone are twelve positions of the calendar; a model served every day must
    also learn the first days of a period (1 January, 1 July, 1 August), or it reads them
    as the month end after and its PD jumps overnight. Halving the households of each
    dense date keeps the training rows as many as month ends alone would give."""
    out, shares = [], {}
    for d in dates:
        first = d + timedelta(days=1)
        dense = first <= until
        for day in (d, first) if dense else (d,):
            out.append(day)
            shares[day] = 0.5 if dense else 1.0
    return out, shares


def keep_share(t: pa.Table, as_of: date, share: float) -> pa.Table:
    """The rows of the households a seeded hash of (code, date) keeps at ``share``: the
    same households for the same date on every run, other ones on another date."""
    if share >= 1.0:
        return t
    cut = int(share * 1000)
    keep = [zlib.crc32(f"{u}|{as_of}".encode()) % 1000 < cut for u in t.column("uscc").to_pylist()]
    return t.filter(pa.array(keep, pa.bool_()))


def _oracle(truth_dir: Path | None, as_of: date) -> pa.Table | None:
    if truth_dir is None:
        return None
    path = truth_dir / "oracle.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no oracle file at {path}")
    t = pq.read_table(path, columns=["uscc", "as_of", "oracle_pd"], filters=[("as_of", "=", as_of)])
    # the generator writes the oracle at month ends only: another day has none
    return t.select(["uscc", "oracle_pd"]) if t.num_rows else None


def build_training_set(
    con: duckdb.DuckDBPyConnection,
    dates: list[date],
    out: Path,
    horizon_months: int = 12,
    truth_dir: Path | None = None,
    policy: Policy = Policy.LEGAL,
    progress: bool = False,
    known_at: KnownAt = KnownAt.AS_OF,
    shares: dict[date, float] | None = None,
) -> dict:
    """Write ``out/dataset.parquet`` and ``out/manifest.json``; returns the manifest.

    ``shares``: the share of households a date keeps (:func:`dense_dates`; default all).

    Each snapshot's features use the record versions ``known_at`` says; its labels are
    always the outcomes as known now."""
    through = observed_through(con)
    bad = [d for d in dates if not labelable(d, horizon_months, through)]
    if bad:
        raise ValueError(
            f"as-of dates whose {horizon_months}-month label window is not fully observed "
            f"(records run to {through}): {[d.isoformat() for d in bad]}"
        )
    engine = DuckDBEngine(con)
    out.mkdir(parents=True, exist_ok=True)
    writer = None
    per_date = []
    try:
        for d in track(
            dates, len(dates), progress, "building snapshots", lambda d: f"snapshot {d}"
        ):
            feats = engine.features(d, policy, known_at.day(d))
            t = _with_labels(feats, engine.outcomes(d, horizon_months))
            t = keep_share(t, d, (shares or {}).get(d, 1.0))
            oracle = _oracle(truth_dir, d)
            if oracle is not None:
                t = t.join(oracle, "uscc", join_type="left outer").sort_by("uscc")
                missing = t.num_rows - pc.count(t.column(ORACLE_COLUMN)).as_py()
                if missing:
                    logger.info(  # the synthetic truth's detail: recorded, not a warning
                        "%s: %d households have no oracle value (operating as known then; "
                        "the truth knows they had left)",
                        d,
                        missing,
                    )
            else:
                t = t.append_column(ORACLE_COLUMN, pa.nulls(t.num_rows, pa.float64()))
            if writer is None:
                writer = pq.ParquetWriter(out / "dataset.parquet", t.schema, compression="zstd")
            writer.write_table(t)
            per_date.append(
                {
                    "as_of": d.isoformat(),
                    "rows": t.num_rows,
                    "label_rate": round(pc.mean(t.column(LABEL_COLUMN)).as_py() or 0.0, 6),
                    "share": (shares or {}).get(d, 1.0),
                }
            )
            logger.info("%s: %d rows", d, t.num_rows)
    finally:
        if writer is not None:
            writer.close()
    manifest = {
        "kind": "training_set",
        "catalogue_version": catalogue_version(),
        "policy": policy.value,
        "known_at": known_at.value,
        "horizon_months": horizon_months,
        "as_of_dates": [d.isoformat() for d in dates],
        "per_date": per_date,
        "rows": sum(p["rows"] for p in per_date),
        "observed_through": through.isoformat(),
        "source_fingerprint": source_fingerprint(con),
        "oracle_from": str(truth_dir) if truth_dir else None,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _with_labels(feats: pa.Table, outcomes: pa.Table) -> pa.Table:
    """Append each household's outcome, in the features' row order (every household in
    the features is in the register, so every row gets one)."""
    labelled = feats.join(outcomes, "uscc", join_type="left outer").sort_by("uscc")
    if labelled.num_rows != feats.num_rows or labelled.column(LABEL_COLUMN).null_count:
        raise AssertionError("features and outcomes cover different households")
    return labelled


def build_snapshot(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    out: Path,
    policy: Policy = Policy.LEGAL,
    known_at: date | None = None,
) -> dict:
    """Write one scoring snapshot ``out`` (Parquet) and ``<out>.manifest.json``.

    DuckDB writes the Parquet itself (in parallel, without a round trip through Arrow);
    the rows are those of :meth:`DuckDBEngine.features`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    target = str(out).replace("'", "''")
    rows = con.execute(
        f"COPY ({feature_sql(as_of, policy, known_at)}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)"
    ).fetchone()[0]
    manifest = {
        "kind": "snapshot",
        "catalogue_version": catalogue_version(),
        "policy": policy.value,
        "as_of": as_of.isoformat(),
        "known_at": known_at.isoformat() if known_at else "now",
        "rows": rows,
        "source_fingerprint": source_fingerprint(con),
    }
    out.with_suffix(".manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
