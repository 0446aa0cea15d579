"""Benchmark: training as known at T (what production saw) against as known now.

On the demo warehouse (``make demo``, a history export), builds the demo's training set
both ways, fits and selects the model family with the demo config on each, and scores
both models on the same out-of-time test rows as production would have sent them (as
known on the test date), and on the test rows as known now.

    python bench/bench_known_at.py            # after make demo
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine

from features.catalogue import FEATURE_NAMES
from features.dataset import KnownAt, as_of_dates, build_training_set
from training.data import load_training_set, split_out_of_time
from training.evaluate import auc
from training.train import Splits, TrainConfig, fit_and_select


def _splits(ds: Path, cfg: TrainConfig) -> tuple[pd.DataFrame, Splits]:
    df, _ = load_training_set(ds)
    return df, Splits(*split_out_of_time(df, cfg.train_end, cfg.valid_end))


def _test_auc(model, df: pd.DataFrame, s: Splits) -> float:
    """The model's AUC on the test rows, scored as callers send them (raw features)."""
    raw = df[df.as_of == s.test.meta.as_of.iloc[0]][list(FEATURE_NAMES)].reset_index(drop=True)
    return auc(s.test.y, model.score_frame(raw)["pd"].to_numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--warehouse", type=Path, default=Path("var/demo/warehouse.duckdb"))
    ap.add_argument("--truth", type=Path, default=Path("var/demo/export/truth"))
    ap.add_argument("--config", type=Path, default=Path("configs/demo.toml"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/known_at"))
    args = ap.parse_args()
    cfg = TrainConfig.from_toml(args.config)
    dates = as_of_dates(date(2021, 6, 30), date(2025, 6, 30), 3)
    con = duckdb.connect(str(args.warehouse), read_only=True)
    splits = {}
    for mode in KnownAt:
        ds = args.out / mode.value
        build_training_set(con, dates, ds, truth_dir=args.truth, known_at=mode)
        splits[mode] = _splits(ds, cfg)
    con.close()
    result: dict = {"benchmark": "known_at", "machine": machine(), "date": date.today().isoformat()}
    for mode, (_, s) in splits.items():
        fitted = fit_and_select(cfg, s)
        row = {"chosen": fitted.chosen, "valid_auc": round(fitted.valid_auc[fitted.chosen], 4)}
        for test_mode, (df, t) in splits.items():
            row[f"test_auc_rows_as_known_{test_mode.value}"] = round(
                _test_auc(fitted.model, df, t), 4
            )
        row["train_rows"] = len(s.train.y)
        result[f"trained_as_known_{mode.value}"] = row
    a = result["trained_as_known_as-of"]["test_auc_rows_as_known_as-of"]
    b = result["trained_as_known_now"]["test_auc_rows_as_known_as-of"]
    result["auc_gain_of_as_known_at_t_on_production_rows"] = round(a - b, 4)
    print(json.dumps(result, indent=2))
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
