"""Impact before promotion: how many published households a challenger moves between
classes, logged to MLflow, and the gate that refuses a large move without a reason."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from contextlib import closing

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from governance.impact import impact, population, run_impact
from training.registry import (
    TEST_ROWS,
    load_version,
    log_scoring_model,
    promote,
    record_trainer,
)

NAME = "credref-reference"


@pytest.fixture()
def store(service_home, tmp_path):
    """A copy of the served home's MLflow store (champion v1), so nothing served changes."""
    db = tmp_path / "mlflow.db"
    source = sqlite3.connect(service_home / "mlflow.db")  # through SQLite: see copy_home
    with closing(source), closing(sqlite3.connect(db)) as dst:
        source.backup(dst)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    return MlflowClient()


def _challenger(client: MlflowClient, scale: float, tmp) -> str:
    """Version 2: the champion's booster with its class cuts moved by ``scale``."""
    champion = load_version(NAME, "1").unwrap_python_model().model
    other = dataclasses.replace(
        champion, class_thresholds=tuple(t * scale for t in champion.class_thresholds)
    )
    first = client.get_model_version(NAME, "1").run_id
    rows = client.download_artifacts(
        first, TEST_ROWS, str(client.tracking_uri).split("///")[1] + ".d"
    )
    with mlflow.start_run(experiment_id=client.get_run(first).info.experiment_id):
        mlflow.set_tag("checks_passed", "true")
        mlflow.log_metric("test_ece", 0.01)
        mlflow.log_metrics(  # every month of its test year within the targets
            {"test_worst_month_ece": 0.01, "test_worst_month_class_moves_without_event": 0.01}
        )
        mlflow.log_artifact(rows, artifact_path="evaluation")
        import pandas as pd

        sample = pd.read_parquet(rows).drop(columns=["label"]).head(20)
        version = log_scoring_model(other, sample, NAME)
    record_trainer(NAME, version, "alice")
    return version


WATCHED = {"alipay": slice(0, 300), "wechat": slice(200, 260)}  # rows of the population


def _watching(path, people, online):
    """A watch store where two platforms watch some of the published households."""
    from online_store.reader import OnlineStore
    from serving.watch import WatchStore

    store = WatchStore(path)
    with OnlineStore(online).current() as snap:
        day = snap.day
    for platform, rows in WATCHED.items():
        codes = list(people.uscc.iloc[rows])
        store.watch(platform, f"key-{platform}", codes, day, (10_000, 10_000))
    return path


def test_the_same_model_changes_nothing(service_home, store):
    model = load_version(NAME, "1").unwrap_python_model().model
    people = population(service_home / "online")
    im = impact(people, model, model)
    assert im.households == len(people) > 1000
    assert im.changed_share == 0 and im.first_reason_changed_share == 0
    assert sum(im.migration[c][c] for c in "ABCD") == im.households
    assert im.score_shift["mean"] == 0


def test_a_large_move_is_refused_without_a_reason_and_recorded_with_one(
    service_home, store, tmp_path
):
    client = store
    # the champion re-registered with a signature from raw test rows, as `credref train` does
    champion = _challenger(client, 1.0, tmp_path / "a")
    client.set_registered_model_alias(NAME, "champion", champion)
    v2 = _challenger(
        client, 0.4, tmp_path / "b"
    )  # lower cuts: many households move to worse classes
    people = population(service_home / "online")
    watch = _watching(tmp_path / "watch.sqlite", people, service_home / "online")
    current, challenger, im = run_impact(NAME, v2, service_home / "online", watch)
    assert (current, challenger) == (champion, v2)
    # by hand: each platform's watched households whose class the switch moves
    a = load_version(NAME, champion).unwrap_python_model().model.score_frame(people)
    b = load_version(NAME, v2).unwrap_python_model().model.score_frame(people)
    moved = set(people.uscc[(a.risk_class != b.risk_class).to_numpy()])
    for platform, codes in WATCHED.items():
        mine = set(people.uscc.iloc[codes])
        want = {"watched": len(mine), "changed": len(mine & moved)}
        assert im.watched_by_platform[platform] == want, platform
    assert (
        0
        < im.watched_by_platform["alipay"]["changed"]
        < im.watched_by_platform["alipay"]["watched"]
    )
    assert (
        0.2 < im.changed_share <= 1
        and sum(map(sum, (r.values() for r in im.migration.values()))) == im.households
    )
    assert set(im.changed_share_by_city) and im.score_shift["mean"] == 0  # same margins
    run_id = client.get_model_version(NAME, v2).run_id
    logged = {a.path for a in client.list_artifacts(run_id, "impact")}
    assert logged == {"impact/impact.json", "impact/impact.html"}
    with open(client.download_artifacts(run_id, "impact/impact.json")) as f:
        assert json.load(f)["households"] == im.households

    refused = promote(NAME, v2, approver="bob", impact_share=im.changed_share)
    assert not refused.promoted
    assert any("would change class" in r for r in refused.reasons), refused.reasons
    done = promote(
        NAME, v2, approver="bob", impact_share=im.changed_share, accept_impact="new class policy"
    )
    assert done.promoted, done.reasons
    tags = client.get_model_version(NAME, v2).tags
    assert tags["impact_accepted"] == "new class policy"
    assert float(tags["impact_class_change_share"]) == pytest.approx(im.changed_share, abs=1e-6)


def test_credref_promote_tells_watching_platforms_whose_class_the_new_champion_moves(
    service_home, store, tmp_path, monkeypatch
):
    """Through the CLI, as an analyst promotes: the change feed gets a ``model_changed``
    event for each watched household whose class moves, and none for the others."""
    from typer.testing import CliRunner

    from credref.cli.app import app
    from online_store.reader import OnlineStore
    from serving.events import baseline
    from serving.watch import WatchStore

    client = store
    champion = _challenger(client, 1.0, tmp_path / "a")
    client.set_registered_model_alias(NAME, "champion", champion)
    v2 = _challenger(client, 0.4, tmp_path / "b")
    people = population(service_home / "online")
    watch = _watching(tmp_path / "watch.sqlite", people, service_home / "online")
    old = load_version(NAME, champion).unwrap_python_model().model
    with OnlineStore(service_home / "online").current() as snap:
        codes = [c for _, c in WatchStore(watch).watchers(snap.day, list(people.uscc))]
        baseline(WatchStore(watch), snap, sorted(set(codes)), old, champion)
    for name, value in {
        "CREDREF_HOME": str(tmp_path),
        "CREDREF_MLFLOW_TRACKING_URI": client.tracking_uri,
        "CREDREF_ONLINE_DIR": str(service_home / "online"),
        "CREDREF_WATCH_DB": str(watch),
        "CREDREF_BENTOML_HOME": str(tmp_path / "bentoml"),
    }.items():
        monkeypatch.setenv(name, value)
    done = CliRunner().invoke(
        app, ["promote", "--version", v2, "--approver", "bob", "--accept-impact", "test"]
    )
    assert done.exit_code == 0, done.output
    assert "change feed:" in done.output
    report = tmp_path / "impact" / f"v{v2}-against-v{champion}"  # beside the command's output
    assert json.loads((report / "impact.json").read_text())["households"] == len(people)
    assert "<style>" in (report / "impact.html").read_text()
    new = load_version(NAME, v2).unwrap_python_model().model
    a, b = old.score_frame(people), new.score_frame(people)
    moved = set(people.uscc[(a.risk_class != b.risk_class).to_numpy()])
    for platform, rows in WATCHED.items():
        events = WatchStore(watch).page(platform, 0, 10_000).events
        assert {k for _, _, k, _ in events} == {"model_changed"}
        assert {c for _, c, _, _ in events} == set(people.uscc.iloc[rows]) & moved, platform
