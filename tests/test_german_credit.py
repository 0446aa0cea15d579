"""UCI German credit through the analyst's public API (examples/german_credit.py): the
``credref train --spec`` command trains, cards and registers it like credref's own model,
and with default settings the selected model's AUC is within 0.005 of logistic regression
on the same five folds."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from credref.cli.app import app
from examples.german_credit import (
    FOLDS,
    SPEC,
    Rotation,
    logistic_auc,
    read,
    with_fold_dates,
    write_training_set,
)
from scoring.spec import load_spec
from training.data import split_out_of_time
from training.train import Splits, TrainConfig, fit_and_select

ROOT = Path(__file__).resolve().parent.parent
BANDS = (0.15, 0.30, 0.50)


def test_credref_train_takes_another_catalogue_and_registers_it(tmp_path, monkeypatch):
    dataset = write_training_set(tmp_path / "ds", rotation=0)
    config = tmp_path / "german.toml"
    text = (ROOT / "configs" / "german_credit.toml").read_text()
    config.write_text(text.replace('dataset = "var/german"', f'dataset = "{dataset}"'))
    monkeypatch.setenv("CREDREF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CREDREF_ANALYST", "analyst")
    monkeypatch.setenv("CREDREF_REGISTERED_MODEL", "german-credit")
    monkeypatch.chdir(ROOT)  # the config names the spec by its path in the repository
    result = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "trained version 1" in result.output

    mlflow.set_tracking_uri(f"sqlite:///{(tmp_path / 'home' / 'mlflow.db').resolve()}")
    client = mlflow.MlflowClient()
    version = client.get_model_version("german-credit", "1")
    run = client.get_run(version.run_id)
    assert run.data.params["catalogue_version"] == SPEC.version
    card = Path(client.download_artifacts(run.info.run_id, "model_card.md")).read_text()
    assert card.startswith("# Model card: german-credit") and "UCI Statlog" in card
    assert "DOMAIN.md" not in card and "household" not in card  # none of credref's text
    catalogue = json.loads(
        Path(client.download_artifacts(run.info.run_id, "catalogue.json")).read_text()
    )
    assert catalogue["features"] == list(SPEC.features)

    from training.registry import load_version

    model = load_version("german-credit", "1").unwrap_python_model().model
    assert model.spec == SPEC and model.guide["outcome"] == SPEC.outcome
    rows = with_fold_dates(read(), 0)
    scored = model.score_frame(rows[list(SPEC.features)].head(200))
    codes = {c for r in scored.reasons for c in r.split(";") if c}
    assert codes <= {"G0", "G1", "G2", "G3", "G4", "G5"} and len(codes) > 2


def test_with_default_settings_the_selected_model_is_within_0_005_auc_of_logistic_regression():
    from sklearn.metrics import roc_auc_score

    ours, logistic = [], []
    for r in range(FOLDS):
        rotation, df = Rotation(r), with_fold_dates(read(), r)
        config = TrainConfig(
            Path("-"), rotation.train_end, rotation.valid_end, spec=SPEC, class_bands=BANDS
        )
        splits = Splits(*split_out_of_time(df, rotation.train_end, rotation.valid_end, SPEC))
        fitted = fit_and_select(config, splits)
        ours.append(roc_auc_score(splits.test.y, fitted.model.score_frame(splits.test.X).pd))
        logistic.append(logistic_auc(df, rotation))
    mean_ours, mean_logistic = sum(ours) / FOLDS, sum(logistic) / FOLDS
    assert mean_ours > 0.74 and mean_ours >= mean_logistic - 0.005, (ours, logistic)


def test_a_spec_is_named_by_module_or_by_file_and_a_wrong_name_is_a_clear_error():
    assert load_spec("examples.german_credit:SPEC") == SPEC
    assert load_spec(f"{ROOT / 'examples' / 'german_credit.py'}:SPEC") == SPEC
    for wrong, message in (
        ("examples.german_credit:FOLDS", "is not a ModelSpec"),
        ("no.such.module:SPEC", "cannot import"),
        ("/no/such/file.py:SPEC", "no spec file"),
        ("SPEC", "MODULE:NAME"),
    ):
        with pytest.raises(ValueError, match=message):
            load_spec(wrong)
