"""The pilot chain and the scaling study: generate -> ingest -> features -> score-all.

Each stage is timed (wall, peak memory of the process tree) at each size on DuckDB; the
features stage is one as-of snapshot written to Parquet; score-all streams the same
snapshot's query through the champion (PD, score, class and reasons) and records the
time spent on prediction and on reasons. ``--spark`` adds features + scoring on Spark
local mode (2 cores) for the sizes given there.

    python bench/bench_pilot.py --sizes 1000000,3000000,11000000 --spark 100000,300000 \\
        --model-home var/demo
    # reuse an existing export and warehouse for a size:  --reuse 11000000=bench/out/pilot

Targets (11M): ingest + features + score-all <= 15 minutes; score-all with reasons <= 5
minutes; reasons <= 2x plain prediction; peak memory <= 16 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine, measure

AS_OF = date(2026, 9, 30)
SECRET = b"credref-development-secret-not-for-production"


def stage(results: dict, name: str, fn):
    with measure() as m:
        out = fn()
    results[name] = {"wall_s": round(m.wall_s, 1), "peak_rss_gb": round(m.peak_rss_gb, 2)}
    print(f"  {name}: {results[name]}", flush=True)
    return out


def run_size(n: int, root: Path, served, reuse: Path | None) -> dict:
    from features.dataset import build_snapshot
    from records.ingest import ingest
    from records.warehouse import connect
    from scoring.batch import score_all_duckdb
    from synth.generate import generate

    res: dict = {"households": n}
    export = reuse if reuse else root / f"export_{n}"
    wh = Path(f"{reuse}.duckdb") if reuse else root / f"wh_{n}.duckdb"
    if reuse:
        res["reused"] = str(reuse)
    else:
        shutil.rmtree(export, ignore_errors=True)
        wh.unlink(missing_ok=True)
        stage(res, "generate", lambda: generate(export, n, 7, AS_OF, SECRET, progress=False))
        stage(res, "ingest", lambda: ingest(export, wh, progress=False))
    con = connect(wh, read_only=True, memory_limit="10GB")
    try:
        snap = stage(
            res, "features", lambda: build_snapshot(con, AS_OF, root / f"snap_{n}.parquet")
        )
        res["operating"] = snap["rows"]
        manifest = stage(
            res,
            "score_all",
            lambda: score_all_duckdb(
                con, AS_OF, served.model, served.version, served.tag, root / f"scores_{n}"
            ),
        )
    finally:
        con.close()
    res["predict_s"], res["reasons_s"] = manifest["predict_s"], manifest["reasons_s"]
    res["reasons_over_predict"] = round(manifest["reasons_s"] / manifest["predict_s"], 2)
    res["scored"] = manifest["rows"]
    res["score_all_us_per_household"] = round(
        1e6 * res["score_all"]["wall_s"] / manifest["rows"], 2
    )
    res["features_us_per_household"] = round(1e6 * res["features"]["wall_s"] / n, 2)
    return res


def run_spark(n: int, root: Path, served) -> dict:
    from features.engines import export_tables, spark_session
    from records.ingest import ingest
    from records.warehouse import connect
    from scoring.batch import score_all_spark
    from synth.generate import generate

    res: dict = {"households": n, "engine": "spark local[2]"}
    export, wh, tables = root / f"sx_{n}", root / f"sx_{n}.duckdb", root / f"sx_{n}_tables"
    for p in (export, tables):
        shutil.rmtree(p, ignore_errors=True)
    wh.unlink(missing_ok=True)
    generate(export, n, 7, AS_OF, SECRET, progress=False)
    ingest(export, wh, progress=False)
    con = connect(wh, read_only=True)
    export_tables(con, tables)
    con.close()
    spark = spark_session("local[2]", memory="4g")
    try:
        manifest = stage(
            res,
            "features_and_score_all",
            lambda: score_all_spark(
                spark,
                tables,
                AS_OF,
                served.model,
                served.version,
                served.tag,
                root / f"sx_scores_{n}",
            ),
        )
    finally:
        spark.stop()
    res["scored"] = manifest["rows"]
    res["us_per_household"] = round(1e6 * res["features_and_score_all"]["wall_s"] / n, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,3000000,11000000")
    ap.add_argument("--spark", default="100000,300000")
    ap.add_argument(
        "--reuse",
        action="append",
        default=[],
        help="SIZE=EXPORT_DIR (warehouse: EXPORT_DIR.duckdb)",
    )
    ap.add_argument("--model-home", type=Path, default=Path("var/demo"))
    ap.add_argument("--root", type=Path, default=Path("bench/out/pilot_chain"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/pilot_chain.json"))
    args = ap.parse_args()
    os.environ.setdefault("BENTOML_HOME", str((args.model_home / "bentoml").resolve()))
    from scoring.served import load_served_model, use_store

    use_store(args.model_home / "bentoml")
    served = load_served_model(
        f"sqlite:///{(args.model_home / 'mlflow.db').resolve()}", "credref-reference"
    )
    reuse = {int(k): Path(v) for k, v in (r.split("=", 1) for r in args.reuse)}
    args.root.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "model": served.tag,
        "duckdb": [],
        "spark": [],
    }
    for n in [int(x) for x in args.sizes.split(",") if x]:
        print(f"DuckDB, {n:,} households", flush=True)
        result["duckdb"].append(run_size(n, args.root, served, reuse.get(n)))
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    for n in [int(x) for x in args.spark.split(",") if x]:
        print(f"Spark, {n:,} households", flush=True)
        result["spark"].append(run_spark(n, args.root, served))
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
