"""An open-loop HTTP load generator: requests leave on a fixed schedule, whatever the
server does, and each latency is measured from the moment the request was *due*.

So a slow answer cannot hold back the next request (no coordinated omission): if the
server falls behind, queueing shows up in the latencies instead of lowering the rate.
Plain asyncio streams, HTTP/1.1 keep-alive, a pool of connections; one process.

The generator reports its own lag (how late requests left against the schedule): if
that is large, the generator, not the server, limited the run, and the run is void.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Result:
    rate: float
    duration_s: float
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    send_lag_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def pct(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        s = sorted(values)
        return s[min(len(s) - 1, int(q * len(s)))]

    def summary(self) -> dict:
        n_err = sum(self.errors.values())
        return {
            "offered_rps": self.rate,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "ok": self.ok,
            "errors": n_err,
            "error_kinds": self.errors,
            "achieved_rps": round(self.ok / self.wall_s, 1) if self.wall_s else 0.0,
            "p50_ms": round(self.pct(self.latencies_ms, 0.50), 2),
            "p90_ms": round(self.pct(self.latencies_ms, 0.90), 2),
            "p99_ms": round(self.pct(self.latencies_ms, 0.99), 2),
            "max_ms": round(max(self.latencies_ms, default=float("nan")), 2),
            "generator_lag_p99_ms": round(self.pct(self.send_lag_ms, 0.99), 2),
        }


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "transfer-encoding" and "chunked" in v:
                chunked = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        return status


def _raw(url: str, path: str, body: dict | str, headers: dict[str, str]) -> bytes:
    """A POST of a JSON body, or (``body`` a string) a GET with that query string."""
    host = urlsplit(url).netloc
    if isinstance(body, str):
        head = [f"GET {path}?{body} HTTP/1.1", f"Host: {host}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode()
    raw = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(raw)}"]
    head += ["Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


async def _run(
    url: str,
    path: str,
    bodies: Sequence[dict | str],
    headers: dict[str, str],
    rate: float,
    duration_s: float,
    connections: int,
    timeout_s: float,
) -> Result:
    parts = urlsplit(url)
    pool: asyncio.Queue[_Conn | None] = asyncio.Queue()
    for _ in range(connections):  # opened before the clock starts, one at a time
        r, w = await asyncio.open_connection(parts.hostname, parts.port)
        pool.put_nowait(_Conn(r, w))
        await asyncio.sleep(0.005)
    res = Result(rate, duration_s)
    raws = [_raw(url, path, b, headers) for b in bodies]
    cycle = itertools.cycle(raws)

    async def one(raw: bytes, due: float) -> None:
        conn = await pool.get()
        try:
            if conn is None:
                r, w = await asyncio.open_connection(parts.hostname, parts.port)
                conn = _Conn(r, w)
            status = await asyncio.wait_for(conn.request(raw), timeout_s)
            res.latencies_ms.append((time.perf_counter() - due) * 1000)
            if status == 200:
                res.ok += 1
            else:
                res.errors[str(status)] = res.errors.get(str(status), 0) + 1
        except Exception as e:  # a failed request is an error, its connection dropped
            res.errors[type(e).__name__] = res.errors.get(type(e).__name__, 0) + 1
            res.latencies_ms.append((time.perf_counter() - due) * 1000)
            if conn is not None:
                conn.writer.close()
            conn = None
        finally:
            pool.put_nowait(conn)

    tasks = []
    start = time.perf_counter()
    n = int(rate * duration_s)
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        res.send_lag_ms.append(max(0.0, time.perf_counter() - due) * 1000)
        tasks.append(asyncio.create_task(one(next(cycle), due)))
        res.sent += 1
    await asyncio.gather(*tasks)
    res.wall_s = time.perf_counter() - start
    while not pool.empty():
        c = pool.get_nowait()
        if c is not None:
            c.writer.close()
    return res


def run(
    url: str,
    path: str,
    bodies: Sequence[dict | str],
    headers: dict[str, str],
    rate: float,
    duration_s: float,
    connections: int = 64,
    timeout_s: float = 10.0,
) -> Result:
    """Offer ``rate`` requests per second for ``duration_s`` seconds; measure everything."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    # The generator must not be the one starved of CPU when it shares the machine; if a
    # higher priority is not permitted, generator_lag_p99_ms shows the cost.
    with contextlib.suppress(OSError):
        os.nice(-10)
    # A collection pass over the caller's big objects would stall the schedule: the
    # generator, not the server, would then be measured.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return asyncio.run(
            _run(url, path, bodies, headers, rate, duration_s, connections, timeout_s)
        )
    finally:
        gc.enable()
        gc.unfreeze()
