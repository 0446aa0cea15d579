"""Training data: load a training set, make the model matrix, split out of time.

The model matrix holds exactly the catalogue's features, in catalogue order, with the
categorical ones as pandas categoricals over the catalogue's fixed categories. The label
and the oracle column are returned apart and never enter the matrix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.dataset import LABEL_COLUMN, ORACLE_COLUMN
from scoring.spec import CREDREF, ModelSpec


def model_matrix(df: pd.DataFrame, spec: ModelSpec = CREDREF) -> pd.DataFrame:
    """The spec's features as the model sees them (float64 or fixed categoricals)."""
    missing = [f for f in spec.features if f not in df.columns]
    if missing:
        raise ValueError(f"input lacks catalogue features: {missing}")
    out = {}
    for name in spec.features:
        if name in spec.categories:
            cats = list(spec.categories[name])
            out[name] = pd.Categorical(df[name].astype("string"), categories=cats)
        else:
            out[name] = pd.to_numeric(df[name], errors="raise").astype("float64")
    return pd.DataFrame(out, index=df.index)


@dataclass
class Split:
    """One part of the out-of-time design."""

    name: str
    X: pd.DataFrame
    y: np.ndarray
    meta: pd.DataFrame  # uscc, as_of, oracle_pd: evaluation only

    @property
    def dates(self) -> list[str]:
        return sorted({str(d) for d in self.meta.as_of})


def load_training_set(path: Path) -> tuple[pd.DataFrame, dict]:
    """Read ``path/dataset.parquet`` and its manifest."""
    manifest = json.loads((path / "manifest.json").read_text())
    df = pq.read_table(path / "dataset.parquet").to_pandas()
    df["as_of"] = pd.to_datetime(df["as_of"]).dt.date
    return df, manifest


def split_out_of_time(
    df: pd.DataFrame, train_end: date, valid_end: date, spec: ModelSpec = CREDREF
) -> tuple[Split, Split, Split]:
    """Train on as-of dates <= train_end, validate on (train_end, valid_end], test on every
    labelled date after valid_end (with monthly dates, a whole year of calendar positions:
    the model is judged on the days it serves). Never a random split across dates.

    ``df`` holds ``as_of``, the label and ``spec``'s features; ``uscc`` (a row's key) and
    the oracle's PD are kept for evaluation when present."""
    dates = sorted(df.as_of.unique())
    later = [d for d in dates if d > valid_end]
    if not later:
        raise ValueError(
            f"no as-of date after valid_end {valid_end} to test on (dates: {dates[0]}..{dates[-1]})"
        )
    parts = {
        "train": df[df.as_of <= train_end],
        "valid": df[(df.as_of > train_end) & (df.as_of <= valid_end)],
        "test": df[df.as_of > valid_end],
    }
    out = []
    for name, part in parts.items():
        if part.empty:
            raise ValueError(
                f"the {name} split is empty (train_end={train_end}, valid_end={valid_end})"
            )
        part = part.reset_index(drop=True)
        out.append(
            Split(
                name,
                model_matrix(part, spec),
                part[LABEL_COLUMN].to_numpy().astype(int),
                part[[c for c in ("uscc", "as_of", ORACLE_COLUMN) if c in part.columns]],
            )
        )
    return out[0], out[1], out[2]
