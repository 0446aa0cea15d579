"""Helpers shared by test modules: a real server on a served home, and its settings."""

from __future__ import annotations

import subprocess
from pathlib import Path

from serving import launch

#: The ID-hash secret of every test domain.
SECRET = b"test-secret"


def service_env(home: Path, **extra: str) -> dict[str, str]:
    """CREDREF_* settings for a service on ``home`` (secret, paths, short audit wait)."""
    return {
        "CREDREF_HOME": str(home),
        "CREDREF_WAREHOUSE": str(home / "warehouse.duckdb"),
        "CREDREF_ID_HASH_SECRET": SECRET.decode(),
        "CREDREF_AUDIT_TIMEOUT_S": "0.5",
        "BENTOML_HOME": str(home / "bentoml"),
        **extra,
    }


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    launch.wait_ready(f"{url}/readyz", proc, log, timeout)


def start_server(home: Path, log: Path, workers: int = 2, **extra: str):
    """A real ``credref serve`` on ``home``; returns the process and its base URL."""
    port = launch.free_port()
    proc = launch.start(service_env(home, CREDREF_PORT=str(port), **extra), log, workers)
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen) -> None:
    launch.stop(proc, timeout=30)
