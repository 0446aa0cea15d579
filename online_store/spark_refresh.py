"""The refresh's recomputation on Spark, for a national register.

The daily refresh (:mod:`online_store.incremental`) is one difference query over the
warehouse's records and their history, then a small write. At national scale the query
is the cost, so it can run on Spark: the same SQL text, transpiled by sqlglot
(``features.engines``), over the record tables as Parquet (``export_tables``). Two ways:

* in process: ``credref refresh --engine spark [--spark-master URL]`` exports the tables,
  runs the query on that master and applies the result;
* on a cluster: ``spark-submit online_store/spark_refresh.py`` writes the changed households
  as Parquet with a ``refresh.json`` naming the publication it was computed against
  (:mod:`online_store.changes`), and
  ``credref refresh --changes DIR`` applies it (refused if the current publication is
  another one). The recipe is in the README ("Running the daily refresh").

    credref refresh-plan > plan.json          # what the current publication is
    spark-submit --master spark://host:7077 --py-files credref.zip \\
        online_store/spark_refresh.py --tables /data/tables --plan plan.json \\
        --as-of 2026-09-02 --out /data/changes/2026-09-02
    credref refresh --changes /data/changes/2026-09-02
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from features.engines import SparkEngine, to_spark_sql
from online_store.changes import MANIFEST, ROWS
from online_store.incremental import DiffQuery, Step

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession  # Spark is the scale-out path: loaded when used


def spark_recompute(spark: SparkSession, tables: str):
    """A :data:`online_store.incremental.Recompute` running the query on ``spark``."""

    SparkEngine(spark, tables)  # registers every table and its history as a view

    def run(query: DiffQuery) -> pa.Table:
        return difference(spark, query).toArrow()

    return run


def difference(spark: SparkSession, query: DiffQuery):
    """The day's changed households as a Spark DataFrame (the same SQL, transpiled)."""

    spark.sql(to_spark_sql(query.new)).createOrReplaceTempView("n")
    spark.sql(to_spark_sql(query.old)).createOrReplaceTempView("o")
    return spark.sql(to_spark_sql(f"WITH {query.diff}"))


def main(argv: list[str] | None = None) -> dict:
    from pyspark.sql import SparkSession  # Spark is the scale-out path: loaded when used

    ap = argparse.ArgumentParser(description="credref refresh: the recomputation on Spark")
    ap.add_argument("--tables", required=True, help="folder or URI of <table>.parquet")
    ap.add_argument("--plan", required=True, type=Path, help="`credref refresh-plan` output")
    ap.add_argument("--as-of", required=True, type=date.fromisoformat)
    ap.add_argument("--out", required=True, type=Path, help="folder for the changed rows")
    args = ap.parse_args(argv)
    plan = json.loads(args.plan.read_text())
    spark = SparkSession.builder.appName(f"credref refresh {args.as_of}").getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    try:
        SparkEngine(spark, args.tables)
        query = DiffQuery(Step.from_meta(plan, args.as_of))
        difference(spark, query).write.mode("overwrite").parquet(str(args.out / ROWS))
        rows = spark.read.parquet(str(args.out / ROWS)).count()
        master = spark.sparkContext.master
    finally:
        spark.stop()
    manifest = {
        "before": plan["publication"],
        "as_of": args.as_of.isoformat(),
        "rows": rows,
        "master": master,
    }
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest))
    return manifest


if __name__ == "__main__":
    main()
