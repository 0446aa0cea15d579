"""``spark-submit`` entry point: features and scores for a whole country on a cluster.

The same feature SQL (transpiled by sqlglot) and the same scoring function as
``credref score-all``; the model's files travel with the tasks (no shared disk needed).

    # once, on a machine with the MLflow store: the champion's files
    credref model-files --out model/
    # package the code
    zip -r credref.zip credref features training serving
    spark-submit --master yarn --deploy-mode cluster \\
        --py-files credref.zip --files model/booster.txt,model/scoring.json,model/points.json,model/spec.json \\
        --conf spark.executor.instances=40 --conf spark.executor.cores=4 \\
        --conf spark.executor.memory=8g --conf spark.sql.shuffle.partitions=1600 \\
        --conf spark.sql.session.timeZone=UTC \\
        scoring/spark_job.py --tables hdfs:///regulator/tables --as-of 2026-09-30 \\
        --model . --out hdfs:///regulator/scores/2026-09-30

``--tables`` holds one Parquet folder per record table (``households.parquet``, ...), as
``features.engines.export_tables`` writes them. Executors need the pinned Python packages
(``requirements.lock``), e.g. from a conda-pack or venv archive (``--archives``).
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from scoring.batch import score_all_spark
from scoring.model import ScoringModel


def main(argv: list[str] | None = None) -> dict:
    from pyspark.sql import SparkSession  # Spark is the scale-out path: loaded when used

    ap = argparse.ArgumentParser(description="credref features + scores on Spark")
    ap.add_argument("--tables", required=True, help="folder of <table>.parquet")
    ap.add_argument("--as-of", required=True, type=date.fromisoformat)
    ap.add_argument("--model", required=True, type=Path, help="folder of the model's files")
    ap.add_argument("--out", required=True, help="output URI for the scores (Parquet)")
    ap.add_argument(
        "--manifest", type=Path, default=Path("."), help="local folder for manifest.json"
    )
    args = ap.parse_args(argv)
    model = ScoringModel.load(args.model)
    spark = SparkSession.builder.appName(f"credref score-all {args.as_of}").getOrCreate()
    meta = json.loads((args.model / "scoring.json").read_text())
    try:
        return score_all_spark(
            spark,
            args.tables,
            args.as_of,
            model,
            meta.get("mlflow_version", "?"),
            "spark-submit",
            args.out,
            manifest_dir=args.manifest,
        )
    finally:
        spark.stop()


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
