"""Importing product code has no side effects, and the request path stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("credref", "features", "training", "serving")

_IMPORT_ALL = f"""
import importlib, pkgutil, json
names = []
for pkg in {PACKAGES!r}:
    mod = importlib.import_module(pkg)
    names.append(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        importlib.import_module(info.name)
        names.append(info.name)
print(json.dumps(names))
"""


def _run(code: str, env: dict) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_importing_every_product_module_creates_nothing(tmp_path):
    home, bento = tmp_path / "home", tmp_path / "bentoml"
    for d in (home, bento):
        d.mkdir()
        d.chmod(0o555)  # read-only: a module that writes here fails to import
    env = {
        **os.environ,
        "CREDREF_HOME": str(home),
        "BENTOML_HOME": str(bento),
        "MPLBACKEND": "",  # so a module choosing a backend at import would show in the env
    }
    before = dict(os.environ)
    try:
        names = json.loads(_run(_IMPORT_ALL, env))
    finally:
        for d in (home, bento):
            d.chmod(0o755)
    assert "serving.service" in names and "training.train" in names and len(names) > 40
    assert list(home.iterdir()) == [] and list(bento.iterdir()) == []
    assert dict(os.environ) == before


def test_the_scoring_artefact_and_the_request_path_load_no_duckdb_sqlglot_or_mlflow():
    code = """
import json, sys
import training.scoring, serving.online, serving.gateway, serving.body, serving.limits
import serving.verification, serving.schemas, serving.metrics
import serving.monitoring, serving.watch, serving.events, serving.replies
print(json.dumps(sorted(m for m in ("duckdb", "sqlglot", "mlflow") if m in sys.modules)))
"""
    assert json.loads(_run(code, dict(os.environ))) == []


def test_the_synthetic_domain_is_never_imported_by_product_code():
    code = f"""
import importlib, pkgutil, json, sys
for pkg in {PACKAGES!r}:
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted(m for m in sys.modules if m == "synth" or m.startswith("synth."))))
"""
    assert json.loads(_run(code, dict(os.environ))) == []
