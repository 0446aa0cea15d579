"""Wall time and peak memory (whole process tree) of a block of work, for benchmarks."""

from __future__ import annotations

import os
import platform
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import psutil


@dataclass
class Measurement:
    wall_s: float = 0.0
    peak_rss_gb: float = 0.0
    samples: list[float] = field(default_factory=list)


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with suppress(psutil.Error):  # a child may exit between listing and reading
            total += p.memory_info().rss
    return total


@contextmanager
def measure(interval: float = 0.2):
    """Measure wall time and the peak summed RSS of this process and its children."""
    m = Measurement()
    me = psutil.Process(os.getpid())
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            m.peak_rss_gb = max(m.peak_rss_gb, tree_rss(me) / 2**30)
            stop.wait(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    start = time.perf_counter()
    try:
        yield m
    finally:
        m.wall_s = time.perf_counter() - start
        stop.set()
        t.join()
        m.peak_rss_gb = max(m.peak_rss_gb, tree_rss(me) / 2**30)


def machine() -> str:
    return (
        f"{platform.machine()}, {psutil.cpu_count(logical=True)} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )
