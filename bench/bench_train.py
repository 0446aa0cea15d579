"""Benchmark: `credref train` on at least 2 million snapshot rows (target <= 10 min, 2 cores).

Builds (once) a domain large enough for 2M+ training-set rows, then times the whole
training run: four models, checks, evaluation, plots, MLflow logging and registration.

    python bench/bench_train.py --households 800000
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine, measure

from features.dataset import as_of_dates, build_training_set
from records.ingest import ingest
from synth.generate import generate
from training.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--households", type=int, default=800_000)
    ap.add_argument("--root", type=Path, default=Path("bench/out/train"))
    args = ap.parse_args()
    root = args.root
    ds = root / "dataset"
    if not (ds / "manifest.json").exists():
        generate(root / "export", args.households, 7, date(2026, 9, 30), b"bench", progress=False)
        ingest(root / "export", root / "wh.duckdb", progress=False, memory_limit="8GB")
        con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
        build_training_set(
            con,
            as_of_dates(date(2021, 6, 30), date(2025, 6, 30), 3),
            ds,
            truth_dir=root / "export" / "truth",
        )
        con.close()
    manifest = json.loads((ds / "manifest.json").read_text())
    cfg = TrainConfig(dataset=ds, train_end=date(2023, 6, 30), valid_end=date(2024, 6, 30), seed=7)
    with measure() as m:
        result = train(
            cfg,
            f"sqlite:///{(root / 'mlflow.db').resolve()}",
            root / "mlartifacts",
            "credref-bench",
        )
    print(
        json.dumps(
            {
                "benchmark": "train",
                "dataset_rows": manifest["rows"],
                "wall_s": round(m.wall_s, 1),
                "peak_rss_gb": round(m.peak_rss_gb, 2),
                "chosen": result.chosen,
                "test_auc": round(result.test_metrics["auc"], 4),
                "oracle_ratio": result.summary["oracle_ratio"],
                "machine": machine(),
                "date": date.today().isoformat(),
            },
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
