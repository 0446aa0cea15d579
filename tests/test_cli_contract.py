"""The command line's contract, tried the wrong way: every expected failure is one line on
stderr naming what is at fault, exit 2, no traceback; ``-v`` keeps the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples.german_credit import write_training_set

ROOT = Path(__file__).resolve().parent.parent


def _credref(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CREDREF_")}
    environ |= {"CREDREF_HOME": str(home), "CREDREF_ANALYST": "analyst", **env}
    return subprocess.run(
        [sys.executable, "-m", "credref", *args],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _config(tmp: Path, extra: str) -> str:
    dataset = write_training_set(tmp / "ds", rotation=0)
    path = tmp / "train.toml"
    path.write_text(
        f'[data]\ndataset = "{dataset}"\ntrain_end = "2003-12-31"\nvalid_end = "2004-12-31"\n'
        f'[model]\nspec = "examples.german_credit:SPEC"\n{extra}\n'
    )
    return str(path)


def _truncated_export(tmp: Path) -> str:
    folder = tmp / "export"
    folder.mkdir()
    (folder / "households.parquet").write_bytes(b"PAR1 cut short")
    return str(folder)


#: (name, arguments given the temporary folder, environment, what the line must name)
WRONG = [
    ("ingest a missing folder", lambda t: ["ingest", str(t / "none")], {}, "not found"),
    ("ingest a truncated parquet", lambda t: ["ingest", _truncated_export(t)], {}, "households.parquet"),
    ("promote a version that does not exist", lambda t: ["promote", "--approver", "b", "--version", "99"], {}, "version=99"),
    ("validate a version that does not exist", lambda t: ["validate", "--version", "99"], {}, "warehouse"),
    ("refresh from a missing feed", lambda t: ["refresh", "--feed", str(t / "none")], {}, "none"),
    ("a day that is not a date", lambda t: ["summary"], {"CREDREF_TODAY": "2026-02-30"}, "CREDREF_TODAY"),
    ("a port that is not a number", lambda t: ["serve"], {"CREDREF_PORT": "eighty"}, "CREDREF_PORT"),
    ("LightGBM refuses a parameter", lambda t: ["train", "--config", _config(t, "[model.params]\nnum_leaves = -3")], {}, "num_leaves"),
    ("a config key that does not exist", lambda t: ["train", "--config", _config(t, "trails = 5")], {}, "trails"),
    ("a config that does not exist", lambda t: ["train", "--config", str(t / "none.toml")], {}, "none.toml"),
    ("history of an invalid code", lambda t: ["history", "123"], {}, "unified social credit code"),
    ("a summary without a warehouse", lambda t: ["summary"], {}, "warehouse"),
    ("an as-of date that is not a date", lambda t: ["features", "--as-of", "2026-13-01", "--out", str(t / "f.parquet")], {}, "2026-13-01"),
    ("an engine that does not exist", lambda t: ["score-all", "--out", str(t / "s"), "--engine", "bogus"], {}, "--engine"),
    ("revoke a key that does not exist", lambda t: ["keys", "revoke", "nosuchkey"], {}, "nosuchkey"),
    ("replay a request never audited", lambda t: ["audit", "replay", "nosuchrequest"], {}, "audit log"),
    ("a command that does not exist", lambda t: ["scoer"], {}, "scoer"),
]  # fmt: skip


@pytest.mark.parametrize("name, args, env, names", WRONG, ids=[w[0] for w in WRONG])
def test_a_wrong_usage_is_one_line_on_stderr_and_exit_2(name, args, env, names, tmp_path):
    done = _credref(args(tmp_path), tmp_path / "home", **env)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert names in errors[0], errors[0]
    assert all(" ERROR " not in line for line in lines)  # no logged error beside it


def test_verbose_keeps_the_traceback_for_debugging(tmp_path):
    done = _credref(["-v", "ingest", _truncated_export(tmp_path)], tmp_path / "home")
    assert done.returncode != 0 and "Traceback" in done.stderr and "UnreadableFile" in done.stderr


def test_the_version_and_python_dash_m_credref(tmp_path):
    import credref

    done = _credref(["--version"], tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"credref {credref.__version__}"


def test_after_make_demo_a_command_in_the_default_home_says_how_to_reach_the_demo(tmp_path):
    (tmp_path / "var" / "demo").mkdir(parents=True)
    (tmp_path / "var" / "demo" / "warehouse.duckdb").touch()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CREDREF_")}
    done = subprocess.run(
        [sys.executable, "-m", "credref", "summary"],
        env={**environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,  # a clone after `make demo`: var/ is the default home, var/demo the demo's
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "CREDREF_HOME=var/demo CREDREF_TODAY=2026-09-30" in done.stderr, done.stderr


def test_a_normal_training_run_is_quiet(tmp_path):
    done = _credref(["train", "--config", _config(tmp_path, "")], tmp_path / "home")
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if line.strip()]
    # MLflow's registry prints these two itself (eprint, no logger to turn down)
    said = [
        line
        for line in noise
        if not line.startswith(("Successfully registered", "Created version"))
    ]
    assert said == [], said


def test_a_moved_home_is_refused_until_relocated_then_trains_into_its_own_folder(tmp_path):
    import shutil

    import mlflow

    config = _config(tmp_path, "")
    first = tmp_path / "first"
    assert _credref(["train", "--config", config], first).returncode == 0
    moved = tmp_path / "moved"
    shutil.move(first, moved)  # an operator moves the home (or copies it elsewhere)
    refused = _credref(["train", "--config", config], moved)
    assert refused.returncode == 2 and "credref relocate" in refused.stderr, refused.stderr
    done = _credref(["relocate"], moved)
    assert done.returncode == 0 and "now points at" in done.stdout, done.stderr
    again = _credref(["train", "--config", config], moved)
    assert again.returncode == 0, again.stderr
    mlflow.set_tracking_uri(f"sqlite:///{moved.resolve() / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    for version in ("1", "2"):  # the moved model and the new one, both under the new folder
        run = client.get_run(client.get_model_version("credref-reference", version).run_id)
        assert run.info.artifact_uri.startswith((moved.resolve() / "mlartifacts").as_uri())
    from training.registry import load_version

    moved_model = load_version("credref-reference", "1").unwrap_python_model().model
    assert moved_model.spec.name == "german-credit"  # read from the moved folder
    assert "nothing to do" in _credref(["relocate"], moved).stdout


def test_logs_are_timestamped_lines_or_json_objects(tmp_path):
    import json

    args = ["refresh", "--feed", str(tmp_path / "none")]  # a warning, then one error line
    text = _credref(args, tmp_path / "home").stderr.splitlines()
    logged = [line for line in text if " INFO " in line or " WARNING " in line]
    assert logged and all(line[:4].isdigit() and line[10] == "T" for line in logged), text
    lines = _credref(args, tmp_path / "home", CREDREF_LOG_FORMAT="json").stderr.splitlines()
    objects = [json.loads(line) for line in lines if line.startswith("{")]
    assert objects and {"time", "level", "logger", "message"} <= set(objects[0])
    assert all(line.startswith(("{", "error: ")) for line in lines if line.strip()), lines
