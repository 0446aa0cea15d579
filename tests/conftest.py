"""Shared fixtures: small generated domains, made once per session, offline."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from features.generate import generate
from features.ingest import ingest

SECRET = b"test-secret"
END = date(2026, 9, 30)


@pytest.fixture(scope="session")
def small_export(tmp_path_factory) -> Path:
    """A 6,000-household domain (about 2 s to make)."""
    out = tmp_path_factory.mktemp("export")
    generate(out, 6_000, seed=3, end=END, secret=SECRET, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def small_warehouse(small_export, tmp_path_factory) -> Path:
    """The small domain ingested into a DuckDB warehouse (treat as read-only)."""
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    ingest(small_export, path, progress=False)
    return path
