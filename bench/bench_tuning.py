"""Benchmark: tuned (Optuna, ``credref train --trials N``) against the fixed demo config.

On the demo training set (``make demo``) and on a small one cut from it (a random 3% of
the households, every as-of date), fits the model family with the fixed parameters of
``configs/demo.toml`` and with the best of N seeded trials, and compares the chosen
model's out-of-time test AUC (the test rows are never seen by the search).

    python bench/bench_tuning.py --trials 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import mlflow
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine

from training.data import load_training_set, split_out_of_time
from training.registry import use_tracking
from training.train import Splits, TrainConfig, apply_tuning, fit_and_select


def _compare(cfg: TrainConfig, s: Splits, trials: int) -> dict:
    out = {"train_rows": len(s.train.y), "test_rows": len(s.test.y)}
    for name, c in (("fixed", cfg), ("tuned", replace(cfg, trials=trials))):
        t = time.perf_counter()
        with mlflow.start_run(run_name=f"bench tuning {name}"):
            tuned = apply_tuning(c, s)
            f = fit_and_select(tuned, s)
        out[name] = {
            "chosen": f.chosen,
            "test_auc_chosen": round(f.test_auc[f.chosen], 4),
            "test_auc_monotone": round(f.test_auc["monotone"], 4),
            "test_auc_additive": round(f.test_auc["additive"], 4),
            "valid_auc_monotone": round(f.valid_auc["monotone"], 4),
            "valid_auc_additive": round(f.valid_auc["additive"], 4),
            "params": {
                kind: {
                    k: tuned.params_for(kind).get(k)
                    for k in (
                        "learning_rate",
                        "num_leaves",
                        "min_data_in_leaf",
                        "lambda_l2",
                        "feature_fraction",
                    )
                }
                for kind in ("monotone", "additive")
            },
            "wall_s": round(time.perf_counter() - t, 1),
        }
    out["gain_chosen"] = round(out["tuned"]["test_auc_chosen"] - out["fixed"]["test_auc_chosen"], 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", type=Path, default=Path("configs/demo.toml"))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("bench/out/tuning"))
    args = ap.parse_args()
    cfg = TrainConfig.from_toml(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    use_tracking(
        f"sqlite:///{(args.out / 'mlflow.db').resolve()}", args.out / "mlartifacts", "bench-tuning"
    )
    df, _ = load_training_set(cfg.dataset)
    households = df.uscc.unique()
    small = np.random.default_rng(7).choice(
        households, size=len(households) * 3 // 100, replace=False
    )
    result: dict = {
        "benchmark": "tuning",
        "machine": machine(),
        "date": date.today().isoformat(),
        "trials": args.trials,
    }
    for name, frame in (("demo", df), ("small_3pct", df[df.uscc.isin(small)])):
        s = Splits(*split_out_of_time(frame, cfg.train_end, cfg.valid_end))
        result[name] = _compare(cfg, s, args.trials)
        print(json.dumps({name: result[name]}), flush=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
