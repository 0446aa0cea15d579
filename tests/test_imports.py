"""Importing product code has no side effects, and the request path stays light."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "settings",
    "records",
    "features",
    "scoring",
    "training",
    "online_store",
    "serving",
    "governance",
    "household",
    "credref",
)

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
import scoring.model, online_store.reader, serving.gateway, serving.body, serving.limits
import online_store.verification, serving.schemas, serving.metrics
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


# --- the rooms: ARCHITECTURE.md's table is the layering, checked against the code ---------

PRODUCT = (*PACKAGES, "synth", "client")


def _modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _imported_packages(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
    return found & set(PRODUCT)


def _architecture_table() -> dict[str, set[str]]:
    rows = {}
    for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines():
        m = re.match(r"^\| `(\w+)/` \|.*\| ([^|]+) \|$", line)
        if m:
            rows[m.group(1)] = set(re.findall(r"`(\w+)`", m.group(2)))
    return rows


def test_architecture_table_is_the_import_graph():
    table = _architecture_table()
    assert set(table) == set(PRODUCT), "every product package has its row, and only those"
    for package in PRODUCT:
        used = set().union(*(_imported_packages(t) for _, t in _modules(package))) - {package}
        assert used == table[package], (
            f"{package}: imports {sorted(used)}, ARCHITECTURE.md says {sorted(table[package])}"
        )


def test_an_import_inside_a_function_says_why():
    unexplained = []
    for package in PRODUCT:
        for path, tree in _modules(package):
            lines = path.read_text().splitlines()
            for fn in ast.walk(tree):
                if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom) and node is not fn:
                        here = lines[node.lineno - 1]
                        # the reason on the line, on the line above, or on the import above
                        above = "\n".join(lines[max(0, node.lineno - 4) : node.lineno - 1])
                        if "#" not in here and "#" not in above:
                            unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unexplained == []


def test_the_answering_process_loads_nothing_of_the_pipeline():
    code = f"""
import json, sys
import serving.service
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {PRODUCT!r})))
"""
    loaded = set(json.loads(_run(code, dict(os.environ))))
    answering = ("settings", "records", "features", "scoring", "online_store", "serving")
    assert {m.split(".")[0] for m in loaded} <= set(answering)
    pipeline = {
        "records.ingest", "records.merge", "records.validate", "records.changeset",
        "records.warehouse", "features.pit", "features.engines", "features.dataset",
        "scoring.batch", "scoring.spark_job", "online_store.publish",
        "online_store.incremental", "online_store.refresh", "online_store.spark_refresh",
        "online_store.replay",
    }  # fmt: skip
    assert loaded & pipeline == set()
    assert "serving.service" in loaded and "online_store.reader" in loaded


def test_the_wheel_holds_the_product_and_not_the_tests():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = setuptools.find_packages(where=str(ROOT), include=include)
    assert {p.split(".")[0] for p in packages} == set(PRODUCT)
    assert not any(p == "tests" or p.startswith("tests.") for p in packages)


def test_no_product_function_is_longer_than_80_lines():
    long = [
        f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for package in PACKAGES
        for path, tree in _modules(package)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert long == []
