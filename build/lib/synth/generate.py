"""``credref generate``: a synthetic regulator domain for the 8 pilot cities.

Writes one Parquet file per record table into ``out/`` and the truth (frailty and the
oracle PD per as-of date, with the simulated outcome) into ``out/truth/``, which only the
generator and model evaluation may read. Households are simulated in fixed-size chunks,
each with its own seeded generator, so the same seed gives the same bytes whatever the
number of worker processes.

The export is the records as the credit system knew them at the end of ``end`` (or of
``known_at``): ``synth.feed`` simulates when each version arrived. With ``history`` each
file carries every version known by then with ``known_from``/``known_to``; with
``feed_days`` N the export is as known N days before the end, and ``out/feed/`` holds
one change set per following day (``records.changeset``).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from records.changeset import write_changeset
from records.progress import track
from records.schema import HOUSEHOLDS, INDUSTRIES, TABLES, TABLES_BY_NAME, arrow_schema
from records.validate import KNOWLEDGE_COLUMNS
from synth.feed import chunk_versions, day_changes, feed_part, known_at_day
from synth.population import (
    addresses,
    district_names,
    division_codes,
    draw_population,
    id_hmacs,
    operator_names,
    shop_names,
    usccs,
)
from synth.process import EXIT_AUTHORITY, EXIT_REVOKED, EXIT_VOLUNTARY, simulate
from synth.records import build_records
from synth.risk import EPOCH_YEAR, RiskParams, drift_params, month_start_day

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "2"  # 2: records as known at a day (synth.feed)
FEED_STREAM = 0xFEED
CHUNK_SIZE = 250_000
TRUTH_DIR = "truth"
ORACLE_SCHEMA = pa.schema(
    [
        ("uscc", pa.string()),
        ("as_of", pa.date32()),
        ("oracle_pd", pa.float64()),
        ("outcome_12m", pa.int8()),
    ]
)
FRAILTY_SCHEMA = pa.schema([("uscc", pa.string()), ("frailty", pa.float64())])


@dataclass(frozen=True)
class GenerateSpec:
    households: int
    seed: int
    end: date
    oracle_dates: tuple[date, ...]
    chunk_size: int = CHUNK_SIZE
    drift: bool = False
    known_at: date | None = None  # the export as known at the end of this day (default: end)
    history: bool = False  # every version, with known_from / known_to
    feed_days: int = 0  # the export as known this many days before the end, plus change sets

    @property
    def export_day(self) -> date:
        """The day the written export is as known at."""
        if self.feed_days:
            return date.fromordinal(self.end.toordinal() - self.feed_days)
        return self.known_at or self.end


def _day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def month_index(d: date) -> int:
    """Month index of a date (0 = January 2019)."""
    return (d.year - EPOCH_YEAR) * 12 + d.month - 1


def is_month_end(d: date) -> bool:
    return int(month_start_day(month_index(d) + 1)) - 1 == (d - date(1970, 1, 1)).days


def month_ends(start: date, end: date, step: int = 1) -> tuple[date, ...]:
    """Month-end dates from ``start`` to ``end`` inclusive, every ``step`` months counted
    from January (``step=3``: quarter ends)."""
    out = []
    m = month_index(start)
    while m <= month_index(end):
        if m % step == step - 1:
            d = date.fromordinal(date(1970, 1, 1).toordinal() + int(month_start_day(m + 1)) - 1)
            if start <= d <= end:
                out.append(d)
        m += 1
    return tuple(out)


def quarter_ends(start: date, end: date) -> tuple[date, ...]:
    """Quarter-end dates from ``start`` to ``end`` inclusive."""
    return month_ends(start, end, 3)


def _chunk_job(args: tuple) -> dict[str, pa.Table]:
    spec, chunk, secret = args
    start = chunk * spec.chunk_size
    n = min(spec.chunk_size, spec.households - start)
    end_day = (spec.end - date(1970, 1, 1)).days
    rng = np.random.default_rng([spec.seed, chunk])
    params = drift_params() if spec.drift else RiskParams()
    pop, place = draw_population(n, end_day, params.frailty_shape, rng)
    sim = simulate(
        pop, params, month_index(spec.end) + 1, [month_index(d) for d in spec.oracle_dates], rng
    )

    division = division_codes(pop.city, place["district_idx"])
    districts = district_names(pop.city, place["district_idx"])
    codes = np.array(usccs(np.arange(start, start + n), division), dtype=object)
    status = np.select(
        [sim.exit_kind == EXIT_REVOKED, sim.exit_kind > 0], ["revoked", "deregistered"], "operating"
    ).astype(object)
    reason = np.select(
        [
            sim.exit_kind == EXIT_VOLUNTARY,
            sim.exit_kind == EXIT_AUTHORITY,
            sim.exit_kind == EXIT_REVOKED,
        ],
        ["voluntary", "authority_initiated", "licence_revoked"],
        "",
    ).astype(object)
    exited = sim.exit_day >= 0
    households = pa.Table.from_arrays(
        [
            pa.array(codes, pa.string()),
            shop_names(rng, districts, pop.industry),
            operator_names(rng, n),
            pa.array(id_hmacs(division, pop.registered_day, rng, secret), pa.string()),
            pa.array(np.where(place["family"], "family", "individual"), pa.string()),
            pa.array(np.array(INDUSTRIES)[pop.industry], pa.string()),
            pa.array(division, pa.string()),
            addresses(rng, pop.city, districts),
            pa.array(pop.registered_day.astype(np.int32)).cast(pa.date32()),
            pa.array(status, pa.string()),
            pa.array(np.where(exited, sim.exit_day, 0).astype(np.int32), mask=~exited).cast(
                pa.date32()
            ),
            pa.array(reason, pa.string(), mask=~exited),
        ],
        schema=arrow_schema(HOUSEHOLDS),
    )
    final = {"households": households}
    final.update(
        build_records(sim, codes, pop.registered_day, pop.industry, pop.city, chunk, end_day, rng)
    )
    # A stream of its own: the feed never changes what the simulation drew.
    versions = chunk_versions(final, np.random.default_rng([spec.seed, chunk, FEED_STREAM]))
    export_day = _day_number(spec.export_day)
    tables = {
        name: known_at_day(v, export_day, spec.history).cast(
            _export_schema(TABLES_BY_NAME[name], spec.history)
        )
        for name, v in versions.items()
    }
    if spec.feed_days:
        for name, v in versions.items():
            tables[f"feed/{name}"] = feed_part(v, export_day)

    as_of = month_start_day(sim.oracle_month + 1) - 1
    out = sim.oracle_outcome
    tables["truth/oracle"] = pa.Table.from_arrays(
        [
            pa.array(codes[sim.oracle_hh], pa.string()),
            pa.array(as_of.astype(np.int32)).cast(pa.date32()),
            pa.array(sim.oracle_pd),
            pa.array(out, mask=out < 0, type=pa.int8()),
        ],
        schema=ORACLE_SCHEMA,
    )
    tables["truth/frailty"] = pa.Table.from_arrays(
        [pa.array(codes, pa.string()), pa.array(pop.z)], schema=FRAILTY_SCHEMA
    )
    return tables


def generate(
    out: Path,
    households: int,
    seed: int,
    end: date,
    secret: bytes,
    oracle_dates: tuple[date, ...] | None = None,
    workers: int = 2,
    progress: bool = True,
    chunk_size: int = CHUNK_SIZE,
    drift: bool = False,
    known_at: date | None = None,
    history: bool = False,
    feed_days: int = 0,
) -> dict[str, int]:
    """Generate a synthetic domain; returns row counts per table.

    Args:
        out: output folder (created; existing files are overwritten).
        households: number of households in the register (all statuses).
        seed: master seed; same seed and arguments give the same bytes.
        end: last day of the history (a month end).
        secret: the in-domain HMAC key for operator ID numbers.
        oracle_dates: month-end as-of dates for the oracle (default: every month end
            from 2020-01-31 to ``end``: the model is judged on every calendar position).
        workers: worker processes (does not change the output).
        progress: show a progress bar.
        chunk_size: households per independently seeded chunk; part of what the
            output depends on (keep the default outside tests).
        drift: add the drift campaign (:data:`synth.risk.DRIFT_CAMPAIGNS`),
            for seeing monitoring flag it.
        known_at: write the records as known at the end of this day (default ``end``).
        history: write every version known by then, with ``known_from``/``known_to``.
        feed_days: write the export as known this many days before ``end`` and one
            change set per following day under ``out/feed/YYYY-MM-DD/``.
    """
    if households <= 0:
        raise ValueError(f"households must be positive, got {households}")
    if not is_month_end(end) or end < date(2020, 1, 31):
        raise ValueError(f"end must be a month end in 2020 or later, got {end}")
    if oracle_dates is None:
        oracle_dates = month_ends(date(2020, 1, 31), end)
    bad = [d for d in oracle_dates if not is_month_end(d) or d > end or d < date(2019, 1, 31)]
    if bad:
        raise ValueError(f"oracle dates must be month ends between 2019-01-31 and {end}: {bad}")
    if known_at is not None and (known_at > end or feed_days):
        raise ValueError("known_at must be on or before end, and not with feed_days")
    if feed_days < 0:
        raise ValueError(f"feed_days must be 0 or more, got {feed_days}")
    spec = GenerateSpec(
        households,
        seed,
        end,
        tuple(sorted(oracle_dates)),
        chunk_size,
        drift,
        known_at,
        history,
        feed_days,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / TRUTH_DIR).mkdir(exist_ok=True)
    schemas = {t.name: _export_schema(t, history) for t in TABLES}
    schemas["truth/oracle"] = ORACLE_SCHEMA
    schemas["truth/frailty"] = FRAILTY_SCHEMA
    writers = {
        name: pq.ParquetWriter(out / f"{name}.parquet", s, compression="zstd")
        for name, s in schemas.items()
    }
    counts = dict.fromkeys(schemas, 0)
    n_chunks = -(-households // chunk_size)
    jobs = [(spec, c, secret) for c in range(n_chunks)]
    feed: dict[str, list[pa.Table]] = {t.name: [] for t in TABLES}
    try:
        results = _run(jobs, workers)
        for tables in track(results, n_chunks, progress, "generating households"):
            for name, t in tables.items():
                if name.startswith("feed/"):
                    feed[name.removeprefix("feed/")].append(t)
                    continue
                writers[name].write_table(t, row_group_size=1_000_000)
                counts[name] += t.num_rows
    finally:
        for w in writers.values():
            w.close()
    feed_dates = _write_feed(out / "feed", spec, feed) if feed_days else []
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "households": households,
        "seed": seed,
        "chunk_size": chunk_size,
        "end": end.isoformat(),
        "oracle_dates": [d.isoformat() for d in spec.oracle_dates],
        "drift": drift,
        "known_at": spec.export_day.isoformat(),
        "history": history,
        "feed": feed_dates,
        "rows": counts,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return counts


def _run(jobs: list, workers: int):
    if workers <= 1 or len(jobs) == 1:
        yield from map(_chunk_job, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        yield from pool.map(_chunk_job, jobs)


def _export_schema(t, history: bool) -> pa.Schema:
    schema = arrow_schema(t)
    if history:
        for c in KNOWLEDGE_COLUMNS:
            schema = schema.append(pa.field(c.name, pa.date32(), nullable=not c.required))
    return schema


def _write_feed(folder: Path, spec: GenerateSpec, parts: dict[str, list[pa.Table]]) -> list[str]:
    """One change set per day after the export's day, through the end."""
    versions = {name: pa.concat_tables(ts) for name, ts in parts.items()}
    first = _day_number(spec.export_day) + 1
    written = []
    for day in range(first, _day_number(spec.end) + 1):
        d = date.fromordinal(date(1970, 1, 1).toordinal() + day)
        rows, deletions = {}, {}
        for name, v in versions.items():
            changed, deleted = day_changes(v, TABLES_BY_NAME[name], day)
            if changed.num_rows:
                rows[name] = changed
            if deleted.num_rows:
                deletions[name] = deleted
        write_changeset(folder / d.isoformat(), d, rows, deletions)
        written.append(d.isoformat())
    return written
