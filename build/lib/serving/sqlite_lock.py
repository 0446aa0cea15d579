"""Taking SQLite's write lock without SQLite's back-off (shared by the audit and limits).

SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between tries; when the service's
workers meet on a store, that sleep becomes the waiting requests' latency, while the lock
itself is held for well under a millisecond. So connections set ``busy_timeout=0`` and
retry ``BEGIN IMMEDIATE`` every 0.2 ms here instead.
"""

from __future__ import annotations

import sqlite3
import time

RETRY_S = 0.0002


class LockBusy(Exception):
    """Another writer holds the store's lock right now (try again shortly)."""


def _busy(e: sqlite3.OperationalError) -> bool:
    return e.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def begin_immediate(con: sqlite3.Connection, timeout_s: float, retry: bool = True) -> None:
    """BEGIN IMMEDIATE, retried every 0.2 ms for up to ``timeout_s`` (``retry=False``:
    raise :class:`LockBusy` at once, for a caller that retries without blocking)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            con.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if _busy(e) and not retry:
                raise LockBusy() from None
            if not _busy(e) or time.monotonic() >= deadline:
                raise
        time.sleep(RETRY_S)
