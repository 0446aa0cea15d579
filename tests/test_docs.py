"""The documents say what the code is: the generated reference equals the code, every
module has its place on the map, and every path and link a document names exists."""

from __future__ import annotations

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
           "governance", "credref", "synth")  # fmt: skip


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
