"""UCI German credit through credref's public analyst API, against logistic regression
on the same folds (issue 26): every rotation of five folds is a training set that
``training.train.train`` takes with default model settings, logged, carded and registered
in a sqlite MLflow store; the AUC is the registered model's on the test fold.

    .venv/bin/python bench/bench_german_credit.py --out bench/out/german_credit.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples import german_credit as gc
from training.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        for r in range(gc.FOLDS):
            rotation = gc.Rotation(r)
            dataset = gc.write_training_set(home / f"rotation-{r}", r)
            config = TrainConfig(
                dataset=dataset,
                train_end=rotation.train_end,
                valid_end=rotation.valid_end,
                spec=gc.SPEC,
                class_bands=(0.15, 0.30, 0.50),
                experiment="german-credit",
            )
            start = time.perf_counter()
            result = train(config, f"sqlite:///{home / 'mlflow.db'}", home / "art", "german", "a")
            wall = time.perf_counter() - start
            lr = gc.logistic_auc(gc.with_fold_dates(gc.read(), r), rotation)
            rows.append(
                {
                    "rotation": r,
                    "version": result.version,
                    "chosen": result.chosen,
                    "auc": round(result.test_metrics["auc"], 4),
                    "logistic_auc": round(lr, 4),
                    "wall_s": round(wall, 1),
                }
            )
            print(rows[-1], flush=True)
    mean = {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in ("auc", "logistic_auc")}
    report = {
        "rotations": rows,
        "mean": mean,
        "difference": round(mean["auc"] - mean["logistic_auc"], 4),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["mean"]), "difference", report["difference"])


if __name__ == "__main__":
    main()
