"""Every notebook runs top to bottom (a real kernel) on a generated domain."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import service_env

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.slow


def test_there_are_four_notebooks_with_outputs_stripped():
    assert [p.name for p in NOTEBOOKS] == [
        "01-records.ipynb",
        "02-features.ipynb",
        "03-model.ipynb",
        "04-monitoring.ipynb",
    ]
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, p.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs(path, service_home, tmp_path, monkeypatch):
    for k, v in service_env(service_home).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    assert any(
        o.output_type in ("execute_result", "display_data")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
