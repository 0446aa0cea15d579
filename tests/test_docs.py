"""The documents say what the code is: the generated reference equals the code, every
module has its place on the map, and every path and link a document names exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from credref.reference import render

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT / "README.md",
    ROOT / "ARCHITECTURE.md",
    ROOT / "SECURITY.md",
    *(ROOT / "docs").glob("*.md"),
]
PRODUCT = ("settings", "records", "features", "scoring", "training", "online_store", "serving",
           "governance", "household", "credref", "synth", "client")  # fmt: skip


def test_the_reference_is_generated_from_the_code():
    assert (ROOT / "docs" / "reference.md").read_text() == render(), "run `make docs`"


def test_the_readme_opens_with_the_two_commands():
    assert (ROOT / "README.md").read_text().split("\n\n")[1] == "```sh\nmake demo\nmake test\n```"


def test_every_module_has_its_place_in_the_architecture_table():
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(\w+)/` \| (.*)$", (ROOT / "ARCHITECTURE.md").read_text(), re.M)
    }
    missing = []
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            name = path.stem
            if name in ("__init__", "__main__"):
                continue
            if not re.search(rf"\b{name}\b", rows[package]):
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_every_path_and_link_a_document_names_exists():
    broken = []
    for doc in DOCS:
        text = doc.read_text()
        pattern = r"`((?:" + "|".join(PRODUCT) + r")/[\w/]+\.py)`"
        for path in re.findall(pattern, text):
            if not (ROOT / path).is_file():
                broken.append(f"{doc.name}: {path}")
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            if not (doc.parent / link).exists():
                broken.append(f"{doc.name}: {link}")
    assert broken == []


def test_every_example_code_in_the_documents_and_the_api_passes_its_own_check():
    from stdnum.cn import ric, uscc

    from serving.gateway import ROUTES

    texts = [doc.read_text() for doc in DOCS]
    schemas = json.dumps([route.body.model_json_schema() for route in ROUTES.values()])
    codes = {c for t in [*texts, schemas] for c in re.findall(r"\b9[0-9A-Z]{17}\b", t)}
    ids = {c for t in texts for c in re.findall(r"\b[1-6][0-9]{16}[0-9X]\b", t)}
    assert codes and all(uscc.is_valid(c) for c in codes), codes
    assert ids and all(ric.is_valid(c) for c in ids), ids
