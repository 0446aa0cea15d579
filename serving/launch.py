"""Start, wait for and stop a real service process (``credref serve``): one place for the
demo, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx


class NotReady(RuntimeError):
    """The service exited or did not become ready in time (the log's tail attached)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    env: Mapping[str, str], log: Path, workers: int = 2, argv: list[str] | None = None
) -> subprocess.Popen:
    """Start ``credref serve`` (or ``argv``) in its own process group, output to ``log``."""
    cmd = argv or [sys.executable, "-m", "credref.cli", "serve", "--workers", str(workers)]
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Wait until GET ``url`` answers 200 (any answer at all if ``url`` is not a probe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise NotReady(f"the service exited ({proc.returncode}):\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise NotReady(f"not ready after {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the service and every process under it, as a host that dies: BentoML's
    workers run in sessions of their own, so killing the process group would leave them
    answering on the inherited socket."""
    import psutil  # only here: the tests' and benchmarks' host loss

    try:
        root = psutil.Process(proc.pid)
        tree = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.wait()
    psutil.wait_procs(tree, timeout=10)


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM the whole process group; SIGKILL if it does not end in time."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
