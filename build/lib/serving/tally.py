"""Refusals before authentication, audited as counts: the audit's growth stays bounded.

Anyone who can reach the port can send requests without a key. Audited one row each, one
client could write about 2,000 rows a second (50 GB a day) and no row would say who. So a
refusal before authentication (``missing_key``, ``invalid_key``, ``too_many_failures``,
``headers_too_large``, a websocket upgrade) is counted per (client address, code) and
written as one audit row per :attr:`RefusalTally.window_s` seconds and worker, with the
endpoint :data:`ENDPOINT`: the row's outcome holds the code, the HTTP status, the count
and the window's first and last refusal.

The bound: one client address adds at most ``workers x 5`` rows per window (five codes;
with 2 workers and 60 s, 10 rows a minute, 14,400 a day, about 4 MB), and at most
:data:`MAX_CLIENTS` addresses are kept apart per window and worker: the rest are counted
together under ``other``, so all clients together add at most ``workers x 5 x 1,001``
rows a window. Those refused requests were answered nothing, so
writing their row after the answer cannot leak an answer unaudited; a worker killed
mid-window loses at most that window's counts.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from serving.audit import AuditRecord, AuditUnavailable

logger = logging.getLogger(__name__)

#: Client addresses counted apart per window and worker; the rest share one row.
MAX_CLIENTS = 1000
OTHER = "other"
#: The endpoint such rows name: the route was not reached, and is not needed to trace.
ENDPOINT = "before_key"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class RefusalTally:
    """Counts of refusals before authentication, flushed as audit rows every window."""

    def __init__(self, submit: Callable[[AuditRecord], asyncio.Future], window_s: float):
        self.submit = submit  # the gate's group writer
        self.window_s = window_s
        self._counts: dict[tuple[str, str, int], list] = {}  # -> [count, first, last]
        self._clients: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, client: str, code: str, status: int) -> None:
        if client not in self._clients:
            if len(self._clients) >= MAX_CLIENTS:
                client = OTHER
            self._clients.add(client)
        now = _now()
        entry = self._counts.setdefault((client, code, status), [0, now, now])
        entry[0] += 1
        entry[2] = now
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.window_s, self.flush)

    def flush(self) -> None:
        """Write one row per counted (client, code); start a new window."""
        counts, self._counts, self._clients, self._timer = self._counts, {}, set(), None
        for (client, code, status), (n, first, last) in counts.items():
            record = AuditRecord(
                request_id=uuid.uuid4().hex,
                endpoint=ENDPOINT,
                outcome={"http": status, "error": code, "count": n, "first": first, "last": last},
                client=client,
            )
            self.submit(record).add_done_callback(_report)


def _report(fut: asyncio.Future) -> None:
    if fut.cancelled():
        return
    err = fut.exception()
    if isinstance(err, AuditUnavailable):
        logger.error("audit store unavailable: a count of refusals before authentication is lost")
    elif err is not None:
        logger.error("refusal count not audited: %s", type(err).__name__)
