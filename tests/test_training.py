"""Models: training run, checks that can fail, gate and rollback on a real MLflow store,
and behavioural tests in credit terms."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.exceptions import NotFittedError

from features.catalogue import FEATURE_NAMES, NO_ADVERSE
from features.dataset import as_of_dates, build_training_set
from governance.validation import MODEL_CARD_HEADINGS
from records.ingest import ingest
from records.policy import Policy
from scoring.model import (
    MAX_REASONS,
    ScoreScale,
    ScoringModel,
    encode,
    encode_row,
    reason_codes,
    reason_tuples,
)
from synth.generate import generate
from training.checks import monotonicity_violations
from training.data import load_training_set, model_matrix, split_out_of_time
from training.models import WoEScorecard, fit_booster, points_table
from training.registry import CHAMPION, PREVIOUS, promote, rollback
from training.train import TrainConfig, train

pytestmark = pytest.mark.slow
NAME = "credref-test"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    export = root / "export"
    generate(export, 24_000, seed=11, end=date(2026, 9, 30), secret=b"t", progress=False, workers=1)
    wh = root / "wh.duckdb"
    ingest(export, wh, progress=False)
    con = duckdb.connect(str(wh), read_only=True)
    # every month end: a model trained on two calendar positions is miscalibrated on the
    # others, and the gate's month-by-month targets refuse it
    dates = as_of_dates(date(2022, 6, 30), date(2025, 6, 30), 1)
    build_training_set(con, dates, root / "ds", truth_dir=export / "truth")
    build_training_set(con, dates, root / "ds_all", policy=Policy.ALL_PUBLISHED)
    con.close()
    return root


@pytest.fixture(scope="module")
def config(datasets):
    return TrainConfig(
        dataset=datasets / "ds",
        dataset_all_published=datasets / "ds_all",
        train_end=date(2023, 6, 30),
        valid_end=date(2024, 6, 30),
        seed=3,
        rounds=400,
        # leaves of 200 rows, as the demo's config says: the gate's bars were set on them
        params={"min_data_in_leaf": 200},
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"


@pytest.fixture(scope="module")
def first_run(config, store):
    return train(config, store[0], store[1], NAME)


@pytest.fixture(scope="module")
def second_run(first_run, config, store):
    """The same config and seed again: for determinism, and as a challenger the gate
    must let through (one training serves both; each costs about a minute and a half)."""
    return train(config, store[0], store[1], NAME)


def test_a_training_run_is_checked_evaluated_and_registered(first_run, store):
    r = first_run
    assert r.checks_passed, r.summary["check_failures"]
    assert r.version == "1"
    s = r.summary
    assert set(s["test_auc"]) == {"monotone", "additive", "unconstrained", "woe_scorecard"}
    assert s["chosen"] in ("monotone", "additive") and s["why"]
    assert 0.5 < r.test_metrics["auc"] <= 1 and r.test_metrics["ece"] < 0.05
    assert s["oracle_ratio"] is not None and 0.8 < s["oracle_ratio"] < 1.05
    assert "test_auc_all_published" in s["all_published"]
    mlflow.set_tracking_uri(store[0])
    client = MlflowClient()
    run = client.get_run(r.run_id)
    assert run.data.tags["checks_passed"] == "true"
    assert "test_auc" in run.data.metrics and "test_rate_class_D" in run.data.metrics
    names = {a.path for a in client.list_artifacts(r.run_id)}
    for required in (
        "model_card.md",
        "catalogue.json",
        "calibration.png",
        "shap_summary.png",
        "score_by_city.png",
        "slices.csv",
        "class_rates.csv",
        "training_set_manifest.json",
    ):
        assert required in names, required
    assert (
        store[1].exists() and not Path("mlruns").exists()
    )  # artefacts where we said, not ./mlruns
    card = Path(client.download_artifacts(r.run_id, "model_card.md")).read_text()
    headings = [line[3:] for line in card.splitlines() if line.startswith("## ")]
    assert tuple(headings) == MODEL_CARD_HEADINGS
    assert "95% CI" in card


def test_the_logged_pyfunc_answers_pd_score_class_reasons(first_run, store, config):
    mlflow.set_tracking_uri(store[0])
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    df, _ = load_training_set(config.dataset)
    out = model.predict(df[list(FEATURE_NAMES)].head(200))
    assert list(out.columns) == ["pd", "long_run_pd", "score", "risk_class", "override", "reasons"]
    assert out.score.between(0, 1000).all() and set(out.risk_class) <= set("ABCD")
    assert all(0 < len(r.split(";")) <= MAX_REASONS for r in out.reasons)


def test_the_gate_refuses_a_worse_challenger_and_rollback_restores(
    first_run, second_run, config, store
):
    mlflow.set_tracking_uri(store[0])
    client = MlflowClient()
    trainer = client.get_model_version(NAME, "1").tags["trained_by"]
    four_eyes = promote(NAME, "1", approver=f" {trainer.upper()} ")
    assert not four_eyes.promoted and "four eyes" in four_eyes.reasons[0]
    assert client.get_registered_model(NAME).aliases == {}
    with pytest.raises(ValueError, match="an approver is required"):
        promote(NAME, "1", approver=" ")
    assert promote(NAME, "1", approver="reviewer-b").promoted
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "1"
    tags = client.get_model_version(NAME, "1").tags
    assert tags["approved_by"] == "reviewer-b" and tags["approved_at"]
    evidence = json.loads(tags["gate_evidence"])
    assert evidence["checks_passed"] and evidence["challenger_auc"] > 0.5

    weak = replace(config, rounds=1, params={"num_leaves": 2}, dataset_all_published=None)
    v2 = train(weak, store[0], store[1], NAME).version
    gate = promote(NAME, v2, approver="reviewer-b")
    assert not gate.promoted
    assert any("below the champion" in reason for reason in gate.reasons), gate.reasons
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "1"

    v3 = second_run.version  # as good as the champion: let through
    assert promote(NAME, v3, approver="reviewer-b").promoted
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == v3
    assert str(client.get_model_version_by_alias(NAME, PREVIOUS).version) == "1"
    assert rollback(NAME) == "1"
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "1"
    with pytest.raises(ValueError, match="no previous champion"):
        rollback(NAME)


@pytest.fixture(scope="module")
def splits(config):
    df, _ = load_training_set(config.dataset)
    return split_out_of_time(df, config.train_end, config.valid_end)


def test_same_config_and_seed_give_the_same_model(splits):
    tr, va, _ = splits
    a = fit_booster("monotone", tr, va, {}, seed=5, rounds=50)
    b = fit_booster("monotone", tr, va, {}, seed=5, rounds=50)
    assert a.model_to_string() == b.model_to_string()


def test_points_table_is_exact_and_refuses_a_non_additive_booster(splits):
    tr, va, te = splits
    add = fit_booster("additive", tr, va, {}, seed=1, rounds=80)
    pts = points_table(add, te.X)
    assert np.abs(pts.margin(encode(te.X)) - add.predict(te.X, raw_score=True)).max() < 1e-9
    X = encode(te.X.head(400))  # the one-row (online) lookup equals the vectorised one
    single = np.vstack([pts.contributions(X[i : i + 1]) for i in range(len(X))])
    assert np.array_equal(single, pts.contributions(X))
    tree = fit_booster("unconstrained", tr, va, {"num_leaves": 31}, seed=1, rounds=20)
    with pytest.raises(ValueError, match="not additive"):
        points_table(tree, te.X)
    # one evaluation gives margin and contributions (scoring with reasons relies on it)
    for booster, table in ((add, pts), (tree, None)):
        m = ScoringModel(booster, "k", 1.0, 0.0, (0.01, 0.05, 0.2), ScoreScale(), table, "v")
        margin, contrib = m.explain(X)
        np.testing.assert_allclose(margin, booster.predict(X, raw_score=True), atol=1e-9)
        assert np.array_equal(contrib, m.contributions(X))


def test_the_encoded_matrix_is_what_lightgbm_sees_from_the_pandas_matrix(splits, config):
    """Every scoring path uses ``encode``; it must equal training's categorical input."""
    tr, va, _ = splits
    tree = fit_booster("unconstrained", tr, va, {"num_leaves": 31}, seed=1, rounds=40)
    raw, _ = load_training_set(config.dataset)
    raw = raw.head(3000).copy()
    raw.loc[raw.index[:5], "city"] = None  # missing
    raw.loc[raw.index[5:10], "industry"] = "Z"  # unknown category = missing
    X = encode(raw)
    assert np.array_equal(
        tree.predict(X, pred_contrib=True), tree.predict(model_matrix(raw), pred_contrib=True)
    )
    rows = np.asarray([encode_row(r) for r in raw.head(20).to_dict("records")])
    np.testing.assert_array_equal(rows, X[:20])


def test_the_monotonicity_check_catches_a_violating_model():
    rng = np.random.default_rng(0)
    n = 4000
    X = model_matrix(
        pd.DataFrame({f: np.zeros(n) for f in FEATURE_NAMES}).assign(industry="F", city="Wuhan")
    )
    X["penalties_1y"] = rng.integers(0, 6, n).astype(float)
    y = (np.abs(X["penalties_1y"] - 2.5) + rng.normal(0, 0.3, n) < 1).astype(
        int
    )  # risk peaks in the middle
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_in_leaf": 20}, lgb.Dataset(X, y), 30
    )
    assert monotonicity_violations(booster, X)["penalties_1y"] > 0


def test_bad_parameters_are_clear_errors(splits, config, tmp_path):
    tr, va, te = splits
    with pytest.raises(ValueError, match="model kind"):
        fit_booster("deep", tr, va, {}, seed=1)
    with pytest.raises(NotFittedError):
        WoEScorecard().predict_proba(te.X)
    with pytest.raises(ValueError, match="rows"):
        WoEScorecard().fit(tr.X, tr.y[:-1])
    (tmp_path / "c.toml").write_text("[data]\ndataset = 'x'\n")
    with pytest.raises(ValueError, match="missing setting"):
        TrainConfig.from_toml(tmp_path / "c.toml")
    df, _ = load_training_set(config.dataset)
    with pytest.raises(ValueError, match="no as-of date after"):
        split_out_of_time(df, date(2024, 6, 30), date(2025, 6, 30))
    with pytest.raises(ValueError, match="lacks catalogue features"):
        model_matrix(df.drop(columns=["penalties_1y"]))


# --- behavioural tests, in credit terms ------------------------------------------------


@pytest.fixture(scope="module")
def champion(first_run, store):
    from scoring.model import ScoringModel

    mlflow.set_tracking_uri(store[0])
    local = mlflow.artifacts.download_artifacts(f"models:/{NAME}/1")
    return ScoringModel.load(Path(local) / "artifacts" / "scoring_model")


@pytest.fixture(scope="module")
def households(config):
    df, _ = load_training_set(config.dataset)
    return df[df.as_of == df.as_of.max()].head(2000).reset_index(drop=True)


def test_invariance_what_the_model_must_ignore_changed_in_the_records(champion, datasets, tmp_path):
    """Operator names, addresses, shop names, ID hashes and the codes themselves are
    rewritten in the warehouse; the features read from it give every household the same
    score, class and reasons."""
    import shutil

    from features.pit import feature_sql
    from records.schema import TABLES

    wh = tmp_path / "rewritten.duckdb"
    shutil.copy(datasets / "wh.duckdb", wh)
    con = duckdb.connect(str(wh))
    codes = [r[0] for r in con.execute("SELECT uscc FROM households ORDER BY uscc").fetchall()]
    shuffled = list(np.random.default_rng(5).permutation(codes))
    con.execute(
        "CREATE TABLE m AS SELECT * FROM (SELECT unnest(?) AS old, unnest(?) AS new)",
        [codes, shuffled],
    )
    for t in TABLES:
        con.execute(f'UPDATE "{t.name}" SET uscc = m.new FROM m WHERE "{t.name}".uscc = m.old')
    con.execute(
        "UPDATE households SET operator_name = '某' || md5(operator_name), "
        "address = reverse(address), name = NULL, operator_id_hmac = sha256(operator_id_hmac)"
    )
    as_of = date(2026, 6, 30)
    after = con.sql(feature_sql(as_of)).df()
    con.close()
    before_con = duckdb.connect(str(datasets / "wh.duckdb"), read_only=True)
    before = before_con.sql(feature_sql(as_of)).df()
    before_con.close()
    renamed = dict(zip(codes, shuffled, strict=True))
    before["uscc"] = before.uscc.map(renamed)
    before = before.sort_values("uscc").reset_index(drop=True)
    after = after.sort_values("uscc").reset_index(drop=True)
    assert len(before) == len(after) > 10_000
    assert (before.uscc == after.uscc).all()
    pd.testing.assert_frame_equal(champion.score_frame(before), champion.score_frame(after))


def test_directional_one_more_usable_penalty_never_lowers_risk(champion, households):
    base = champion.score_frame(households)
    worse = households.assign(
        penalties_1y=households.penalties_1y + 1,
        penalties_3y=households.penalties_3y + 1,
        penalty_fines_yuan=households.penalty_fines_yuan + 5000,
        penalty_max_severity=np.maximum(households.penalty_max_severity, 2),
        penalty_recency_days=np.minimum(households.penalty_recency_days, 30),
        penalty_violation_types=households.penalty_violation_types + 1,
    )
    after = champion.score_frame(worse)
    assert (after["pd"].to_numpy() >= base["pd"].to_numpy() - 1e-12).all()
    assert (after["score"].to_numpy() <= base["score"].to_numpy()).all()
    assert (after["pd"] > base["pd"]).mean() > 0.9
    assert after.reasons.str.contains("R06|R07").mean() > 0.9


def test_minimum_functionality_long_clean_household_is_class_a(champion, households):
    clean = households.head(1).copy()
    for f in FEATURE_NAMES:
        if f not in ("industry", "city", "reported_employees"):
            clean[f] = 0
    clean["reg_age_years"] = 12.0
    clean["penalty_recency_days"] = 1095
    out = champion.score_frame(clean)
    assert out.risk_class.iloc[0] == "A"
    assert out.reasons.iloc[0] == NO_ADVERSE.code


def test_serious_list_is_class_d_with_r08_first(champion, households):
    listed = champion.score_frame(households.assign(serious_listed=1))
    assert (listed.risk_class == "D").all()
    assert listed.reasons.str.startswith("R08").all()
    assert (listed.override == "serious_list").all()


def _broken(report):
    report.monotonicity_violations["reg_age_years"] = 1  # as if a constraint were broken
    return report


def test_a_failed_check_fails_the_run_and_registers_nothing(config, store, monkeypatch):
    import training.train as tr

    real = tr.run_checks
    monkeypatch.setattr(tr, "run_checks", lambda *a, **k: _broken(real(*a, **k)))
    mlflow.set_tracking_uri(store[0])
    before = len(MlflowClient().search_model_versions(f"name = '{NAME}'"))
    result = train(replace(config, rounds=30, dataset_all_published=None), store[0], store[1], NAME)
    assert not result.checks_passed and result.version is None
    assert MlflowClient().get_run(result.run_id).info.status == "FAILED"
    assert len(MlflowClient().search_model_versions(f"name = '{NAME}'")) == before


def test_reason_texts_come_from_the_catalogue():
    from scoring.model import reason_details

    d = reason_details(("R08", "R06"))
    assert [x["code"] for x in d] == ["R08", "R06"]
    assert d[0]["text_zh"] == "列入严重违法失信名单" and "dishonest" in d[0]["text_en"]
    assert reason_details([NO_ADVERSE.code])[0]["text_en"] == "No adverse record"


def test_reason_codes_rules():
    contrib = np.zeros((3, len(FEATURE_NAMES)))
    contrib[1, FEATURE_NAMES.index("penalties_1y")] = 0.3
    contrib[1, FEATURE_NAMES.index("penalties_3y")] = 0.2  # same code R06: summed
    contrib[1, FEATURE_NAMES.index("abnormal_days")] = 0.4  # R05
    contrib[1, FEATURE_NAMES.index("city")] = 5.0  # no reason code: never shown
    contrib[2, :] = 0.1
    got = reason_codes(contrib)
    assert got[0] == [NO_ADVERSE.code]
    assert got[1] == ["R06", "R05"]
    assert len(got[2]) == MAX_REASONS


def test_vectorised_reasons_equal_the_row_by_row_definition():
    rng = np.random.default_rng(3)
    n = 5000
    contrib = rng.normal(0, 1, (n, len(FEATURE_NAMES))) * (
        rng.random((n, len(FEATURE_NAMES))) < 0.3
    )
    contrib[:50] = -1.0  # nothing pushes risk up: R00
    serious = rng.random(n) < 0.1
    expected = []
    for codes, s in zip(reason_codes(contrib), serious, strict=True):
        if s:
            codes = ["R08", *[c for c in codes if c not in ("R08", "R00")]][:MAX_REASONS]
        expected.append(tuple(codes))
    assert list(reason_tuples(contrib, serious)) == expected
    # online requests (a few rows) take the row-by-row spelling: the same answers
    for lo in range(0, 400, 7):
        hi = lo + [1, 3, 8][lo % 3]
        assert list(reason_tuples(contrib[lo:hi], serious[lo:hi])) == expected[lo:hi]
    assert expected[0] == ("R00",)
    assert all(e[0] == "R08" for e, s in zip(expected, serious, strict=True) if s)


#: Files of a run that hold MLflow's own ids and timestamps (run id, model id, time).
MLFLOW_OWN = {"model/MLmodel"}


def _artefacts(client: MlflowClient, run_id: str, into: Path) -> dict[str, bytes]:
    root = Path(client.download_artifacts(run_id, "", str(into)))
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_two_runs_with_the_same_config_and_seed_give_identical_artefacts(
    first_run, second_run, store, tmp_path
):
    second = second_run
    mlflow.set_tracking_uri(store[0])
    client = MlflowClient()
    a = _artefacts(client, first_run.run_id, tmp_path / "a")
    b = _artefacts(client, second.run_id, tmp_path / "b")
    assert set(a) == set(b) and "shap_summary.png" in a and len(a) > 10
    differ = {name for name in a if a[name] != b[name]}
    assert differ <= MLFLOW_OWN, sorted(differ)
    assert first_run.test_metrics == second.test_metrics


def test_tuning_runs_seeded_trials_as_nested_runs_and_refits_the_best(config, store):
    from training.models import scaled_defaults

    tuned = train(replace(config, trials=2, dataset_all_published=None), store[0], store[1], NAME)
    assert tuned.checks_passed
    mlflow.set_tracking_uri(store[0])
    client = MlflowClient()
    run = client.get_run(tuned.run_id)
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{tuned.run_id}'"
    )
    assert len(children) == 4  # two trials for each kind the selection chooses between
    for kind in ("monotone", "additive"):
        mine = [c for c in children if c.data.tags.get("trial_kind") == kind]
        done = [c for c in mine if c.data.tags.get("trial_state") == "complete"]
        assert len(mine) == 2 and done and all("valid_auc" in c.data.metrics for c in done)
        best = max(c.data.metrics["valid_auc"] for c in done)
        assert run.data.metrics[f"tuning_best_valid_auc_{kind}"] == pytest.approx(best)
        assert {f"tuned_{kind}_num_leaves", f"tuned_{kind}_min_data_in_leaf"} <= set(
            run.data.params
        )
    assert scaled_defaults(1_000)["min_data_in_leaf"] == 20
    assert scaled_defaults(2_000_000)["min_data_in_leaf"] == 1000
    # what an analyst finds in MLflow: a run named for what it trained, the code's commit,
    # the training set as its input, pruned trials not FAILED, the search's outcome said
    assert run.info.run_name == f"train credref to {config.valid_end}"
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    (used,) = run.inputs.dataset_inputs
    assert used.dataset.name == "ds" and used.tags[0].value == "training"
    assert {c.info.status for c in children} == {"FINISHED"}
    said = tuned.summary["tuning"]
    assert len(said) == 2 and all(
        "against the parameters as given" in s or "nothing better" in s for s in said
    )
    kind = client.get_experiment(run.info.experiment_id).tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"
