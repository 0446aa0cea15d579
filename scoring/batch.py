"""Score every operating household: ``credref score-all``.

The same model artefact (the champion imported into BentoML's store, as the service
loads it) and the same scoring function (:meth:`ScoringModel.score_array`: PD, score,
class, override, reason codes) as the online service, so a household gets the same
answer from both.

* DuckDB (default): the feature query is streamed in Arrow batches; each batch is
  encoded, scored and appended to one Parquet file, so memory stays bounded whatever
  the population.
* Spark: the same feature SQL (transpiled by sqlglot) over one Parquet file per table,
  scored with ``mapInPandas`` (each task rebuilds the model from the artefact's files,
  shipped with the task), written as a Parquet folder.

The output manifest records model version and tag, catalogue version, as-of date, row
count, engine, and the time spent on plain prediction and on reasons.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.catalogue import catalogue_version
from features.engines import SparkEngine
from features.pit import feature_sql
from records.progress import track
from scoring.model import REASON_SEPARATOR, ScoringModel, encode

if TYPE_CHECKING:
    import duckdb

BATCH_ROWS = 250_000

SCHEMA = pa.schema(
    [
        ("uscc", pa.string()),
        ("as_of", pa.date32()),
        ("pd", pa.float64()),
        ("score", pa.int32()),
        ("risk_class", pa.string()),
        ("override", pa.string()),
        ("reasons", pa.string()),
    ]
)


@dataclass
class Timing:
    predict_s: float = 0.0
    reasons_s: float = 0.0
    rows: int = 0


def score_table(model: ScoringModel, features: pa.Table | pd.DataFrame, timing: Timing) -> pa.Table:
    """Score one batch of feature rows (Arrow table or pandas frame) into SCHEMA."""
    df = features.to_pandas() if isinstance(features, pa.Table) else features
    X = encode(df, model.spec)
    t0 = time.perf_counter()
    r = model.score_array(X, with_reasons=False)
    t1 = time.perf_counter()
    reasons = model.reasons(X)
    t2 = time.perf_counter()
    timing.predict_s += t1 - t0
    timing.reasons_s += t2 - t1
    timing.rows += len(df)
    return pa.table(
        {
            "uscc": pa.array(df["uscc"].astype(str).to_numpy(), pa.string()),
            "as_of": pa.array(df["as_of"].to_numpy(), pa.date32())
            if "as_of" in df
            else pa.nulls(len(df), pa.date32()),
            "pd": pa.array(r["pd"], pa.float64()),
            "score": pa.array(r["score"].astype(np.int32), pa.int32()),
            "risk_class": pa.array(r["risk_class"].astype(str), pa.string()),
            "override": pa.array(r["override"].astype(str), pa.string()),
            "reasons": pa.array([REASON_SEPARATOR.join(r) for r in reasons], pa.string()),
        },
        schema=SCHEMA,
    )


def _manifest(out: Path, **fields) -> dict:
    manifest = {"kind": "scores", "catalogue_version": catalogue_version(), **fields}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def score_all_duckdb(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    model: ScoringModel,
    model_version: str,
    model_tag: str,
    out: Path,
    progress: bool = False,
) -> dict:
    """Stream the feature snapshot of ``as_of`` through the model into ``out/scores.parquet``."""
    out.mkdir(parents=True, exist_ok=True)
    n = con.execute(f"SELECT count(*) FROM ({feature_sql(as_of)})").fetchall()[0][0]
    timing = Timing()
    start = time.perf_counter()
    reader = con.sql(feature_sql(as_of)).to_arrow_reader(BATCH_ROWS)
    tmp = out / ".scores.parquet.tmp"
    with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer:
        for batch in track(reader, -(-n // BATCH_ROWS), progress, "score-all"):
            writer.write_table(score_table(model, pa.Table.from_batches([batch]), timing))
    tmp.replace(out / "scores.parquet")
    return _manifest(
        out,
        engine="duckdb",
        as_of=as_of.isoformat(),
        rows=timing.rows,
        model_version=model_version,
        model_tag=model_tag,
        wall_s=round(time.perf_counter() - start, 2),
        predict_s=round(timing.predict_s, 2),
        reasons_s=round(timing.reasons_s, 2),
    )


def score_all_spark(
    spark,
    tables_dir: Path | str,
    as_of: date,
    model: ScoringModel,
    model_version: str,
    model_tag: str,
    out: Path | str,
    manifest_dir: Path | None = None,
) -> dict:
    """The same on Spark: transpiled feature SQL, ``mapInPandas`` scoring (the artefact's
    files travel with each task), a Parquet folder ``<out>/scores``.

    ``out`` may be any URI Spark writes to (``hdfs://``, ``s3a://``); the manifest goes to
    ``manifest_dir`` (default: ``out``, which must then be a local folder).
    """

    files = model.files()  # shipped with the task: no shared disk needed on a cluster

    def score_partitions(frames):
        task_model = ScoringModel.from_files(files)
        for df in frames:
            yield score_table(task_model, df, Timing()).to_pandas()

    start = time.perf_counter()
    features = SparkEngine(spark, tables_dir).features_df(as_of)
    ddl = "uscc string, as_of date, pd double, score int, risk_class string, override string, reasons string"
    scored = features.mapInPandas(score_partitions, ddl)
    target = f"{str(out).rstrip('/')}/scores"
    scored.write.mode("overwrite").parquet(target)
    rows = spark.read.parquet(target).count()
    folder = manifest_dir or Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return _manifest(
        folder,
        engine="spark",
        as_of=as_of.isoformat(),
        rows=rows,
        scores=target,
        model_version=model_version,
        model_tag=model_tag,
        wall_s=round(time.perf_counter() - start, 2),
    )
