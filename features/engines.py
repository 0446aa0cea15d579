"""Run the feature and label SQL on DuckDB (embedded default) or Spark (scale-out).

Both engines run the *same* SQL text from ``features.pit``: DuckDB as written, Spark
after ``sqlglot`` transpiles it from the DuckDB dialect. There is no second copy of
any feature definition.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import sqlglot

from features.pit import feature_sql, label_sql, outcome_sql
from records.policy import Policy
from records.schema import TABLES
from records.versions import history_name

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)


def to_spark_sql(sql: str) -> str:
    """Transpile credref's DuckDB-dialect SQL to Spark SQL."""
    return sqlglot.transpile(sql, read="duckdb", write="spark")[0]


class DuckDBEngine:
    """Features and labels on the DuckDB warehouse."""

    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def features(
        self, as_of: date, policy: Policy = Policy.LEGAL, known_at: date | None = None
    ) -> pa.Table:
        return self.con.sql(feature_sql(as_of, policy, known_at)).to_arrow_table()

    def labels(self, as_of: date, horizon_months: int = 12) -> pa.Table:
        return self.con.sql(label_sql(as_of, horizon_months)).to_arrow_table()

    def outcomes(self, as_of: date, horizon_months: int = 12) -> pa.Table:
        return self.con.sql(outcome_sql(as_of, horizon_months)).to_arrow_table()


def export_tables(con: duckdb.DuckDBPyConnection, out: Path) -> dict[str, Path]:
    """Write the warehouse's record tables as Parquet (Spark's input): per table, the
    current versions and the history (``records.versions``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in (n for t in TABLES for n in (t.name, history_name(t))):
        path = out / f"{name}.parquet"
        con.execute(
            f"COPY (SELECT * FROM \"{name}\") TO '{path.as_posix()}' (FORMAT parquet, COMPRESSION zstd)"
        )
        paths[name] = path
    return paths


def spark_session(
    master: str = "local[2]", app: str = "credref", memory: str = "2g"
) -> SparkSession:
    """A Spark session with the settings the feature SQL relies on (UTC, DATE semantics)."""
    from pyspark.sql import SparkSession  # Spark is the scale-out path: loaded when used

    # Python tasks (mapInPandas scoring) run in this interpreter, with this environment.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", memory)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class SparkEngine:
    """Features and labels on Spark, reading one Parquet file (or folder) per table."""

    name = "spark"

    def __init__(self, spark: SparkSession, tables_dir: Path | str):
        """``tables_dir``: a local folder, or any URI Spark reads (``hdfs://``, ``s3a://``)."""
        self.spark = spark
        local = "://" not in str(tables_dir)
        names = [n for t in TABLES for n in (t.name, history_name(t))]
        if local:
            folder = Path(tables_dir)
            missing = [n for n in names if not (folder / f"{n}.parquet").exists()]
            if missing:
                raise FileNotFoundError(f"{tables_dir}: no Parquet for {missing}")
        base = str(tables_dir).rstrip("/")
        for name in names:
            spark.read.parquet(f"{base}/{name}.parquet").createOrReplaceTempView(name)

    def features_df(
        self, as_of: date, policy: Policy = Policy.LEGAL, known_at: date | None = None
    ) -> DataFrame:
        return self.spark.sql(to_spark_sql(feature_sql(as_of, policy, known_at)))

    def labels_df(self, as_of: date, horizon_months: int = 12) -> DataFrame:
        return self.spark.sql(to_spark_sql(label_sql(as_of, horizon_months)))

    def features(
        self, as_of: date, policy: Policy = Policy.LEGAL, known_at: date | None = None
    ) -> pa.Table:
        return _to_arrow(self.features_df(as_of, policy, known_at))

    def labels(self, as_of: date, horizon_months: int = 12) -> pa.Table:
        return _to_arrow(self.labels_df(as_of, horizon_months))


def _to_arrow(df: DataFrame) -> pa.Table:
    return df.toArrow()
