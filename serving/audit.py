"""The audit log: every request, allowed or refused, in a tamper-evident hash chain.

Embedded default: SQLite in WAL mode, shared by one host's workers; with
``CREDREF_DATABASE_URL``, PostgreSQL shared by every host (serving.state). Each row stores the
hash of the previous row and its own hash over (previous hash + the row's canonical
JSON), so editing a row breaks its hash and deleting a row breaks the next row's link or
leaves a gap in the never-reused sequence numbers. An insider who rewrites the whole chain,
or cuts its tail, can only be seen against a checkpoint kept elsewhere: a signed
``(row, hash)`` written by :mod:`serving.anchor`, which ``verify`` checks.

If a row cannot be written, :class:`AuditUnavailable` is raised: the service must then
fail closed (503) rather than answer unaudited.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from serving.sqlite_lock import LockBusy
from serving.state import Connection, Place, Postgres, place

GENESIS = "0" * 64
FIELDS = (
    "request_id",
    "at",
    "platform",
    "endpoint",
    "purpose",
    "subject",
    "outcome",
    "model_version",
    "latency_ms",
    "key_id",
    "client",
)
#: Columns added after the first rows were written: a row hashes them only when set, so
#: the rows written before them keep their hashes (and their checkpoints hold).
LATER_FIELDS = ("key_id", "client")

_DDL = """
CREATE TABLE IF NOT EXISTS audit (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    TEXT NOT NULL,
    at            TEXT NOT NULL,
    platform      TEXT,
    endpoint      TEXT NOT NULL,
    purpose       TEXT,
    subject       TEXT,
    outcome       TEXT NOT NULL,
    model_version TEXT,
    latency_ms    REAL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL,
    key_id        TEXT,
    client        TEXT
)"""


#: After a retention prune: the last deleted row's number and hash, from which the
#: remaining chain links on (serving.anchor.prune signs it first).
_BASE_DDL = """
CREATE TABLE IF NOT EXISTS audit_base (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    seq       INTEGER NOT NULL,
    hash      TEXT NOT NULL,
    pruned_at TEXT NOT NULL
)"""


class AuditUnavailable(RuntimeError):
    """The audit store cannot be written; the request must not be answered."""


@dataclass(frozen=True)
class AuditRecord:
    request_id: str
    endpoint: str
    outcome: dict  # a summary: verdicts, class, error code — never raw inputs or reasons' inputs
    platform: str | None = None
    purpose: str | None = None
    subject: str | None = None  # the USCC asked about
    model_version: str | None = None
    latency_ms: float | None = None
    key_id: str | None = None  # the key that asked (None: refused before authentication)
    client: str | None = None  # the client's address, as the trusted proxies tell it
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds"))

    def values(self) -> tuple:
        return (
            self.request_id,
            self.at,
            self.platform,
            self.endpoint,
            self.purpose,
            self.subject,
            json.dumps(self.outcome, sort_keys=True, ensure_ascii=False),
            self.model_version,
            self.latency_ms,
            self.key_id,
            self.client,
        )


def row_hash(prev_hash: str, values: tuple) -> str:
    row = dict(zip(FIELDS, values, strict=True))
    for name in LATER_FIELDS:
        if row[name] is None:
            del row[name]
    canonical = json.dumps(row, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


@dataclass
class VerifyReport:
    rows: int
    head_hash: str
    problems: list[str]
    head_seq: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    def __init__(self, where: Path | Postgres | Place, timeout_s: float = 5.0):
        self.place = place(where, "audit")
        self.path = self.place.path
        self.timeout_s = timeout_s  # how long a writer waits for the lock before failing closed
        try:
            self.place.prepare((_DDL, _BASE_DDL), _add_later_columns)
        except self.place.errors as e:
            raise AuditUnavailable(
                f"audit store {self.place.label} cannot be opened: {type(e).__name__}"
            ) from e

    def _connect(self, wait: bool = True) -> Connection:
        return self.place.connect(wait)

    def append(self, record: AuditRecord) -> str:
        """Append one row (serialised across processes); returns its hash."""
        return self.append_many([record])[0]

    def append_many(
        self, records: list[AuditRecord], con: Connection | None = None, retry: bool = True
    ) -> list[str]:
        """Append rows in one transaction (all or none); returns their hashes.

        ``retry=False``: raise :class:`LockBusy` at once if another writer holds the lock
        (the caller retries without blocking)."""
        own = con is None
        try:
            if con is None:
                con = self._connect(wait=False)
            try:
                self._begin(con, retry)  # one writer at a time: the chain stays linear
                last = con.execute(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                if last is None:  # empty, or every row pruned: link on from the base
                    last = con.execute("SELECT seq, hash FROM audit_base").fetchone()
                seq, prev = last if last else (0, GENESIS)
                rows, hashes = [], []
                for record in records:  # numbered here, under the lock: never a gap
                    values = record.values()
                    h = row_hash(prev, values)
                    seq += 1
                    rows.append((seq, *values, prev, h))
                    hashes.append(h)
                    prev = h
                con.executemany(
                    f"INSERT INTO audit (seq, {', '.join(FIELDS)}, prev_hash, hash) VALUES "
                    f"(?, {', '.join('?' * len(FIELDS))}, ?, ?)",
                    rows,
                )
                con.execute("COMMIT")
                return hashes
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            finally:
                if own:
                    con.close()
        except self.place.errors as e:
            raise AuditUnavailable(
                f"audit store {self.place.label} cannot be written: {type(e).__name__}"
            ) from e

    def _begin(self, con: Connection, retry: bool = True) -> None:
        """One writer at a time, so the chain stays linear (see :mod:`serving.state`)."""
        self.place.begin_write(con, self.timeout_s, retry)

    def verify(self, checkpoints: list[tuple[int, str]] | tuple = ()) -> VerifyReport:
        """Walk the chain; report every broken link, edited row and gap, and every
        checkpoint ``(seq, hash)`` whose row is gone or has another hash.

        A checkpoint is a prefix anchor: it holds on a log that has grown since, and fails
        on any edit, deletion, truncation or rewritten chain up to its row."""
        problems: list[str] = []
        base = self.base()
        prev, last_seq = (base[1], base[0]) if base else (GENESIS, 0)
        n = 0
        # a checkpoint before the base was checked when its rows were pruned; one at the
        # base must still name the base's hash
        expected = {seq: h for seq, h in checkpoints if seq > last_seq}
        if base and any(seq == base[0] and h != base[1] for seq, h in checkpoints):
            problems.append(f"the pruned log's base (row {base[0]}) has another hash (rewritten)")
        seen: dict[int, str] = {}
        with self._connect() as con:
            rows = con.execute(
                f"SELECT seq, {', '.join(FIELDS)}, prev_hash, hash FROM audit ORDER BY seq"
            )
            for row in rows:
                seq, values, prev_hash, h = (
                    row[0],
                    tuple(row[1 : 1 + len(FIELDS)]),
                    row[-2],
                    row[-1],
                )
                n += 1
                if seq != last_seq + 1:
                    problems.append(f"rows {last_seq + 1}..{seq - 1} are missing (deleted)")
                if prev_hash != prev:
                    problems.append(f"row {seq}: link to the previous row is broken")
                if row_hash(prev_hash, values) != h:
                    problems.append(f"row {seq}: content does not match its hash (edited)")
                if seq in expected:
                    seen[seq] = h
                prev, last_seq = h, seq
        for seq, h in sorted(expected.items()):
            if seq not in seen:
                problems.append(f"checkpoint row {seq} is gone (the log was cut or rows deleted)")
            elif seen[seq] != h:
                problems.append(
                    f"row {seq} no longer has its checkpointed hash {h[:12]}... (rewritten)"
                )
        return VerifyReport(n, prev, problems, last_seq)

    def base(self) -> tuple[int, str] | None:
        """The last pruned row's (number, hash), or None if nothing was pruned."""
        with self._connect() as con:
            row = con.execute("SELECT seq, hash FROM audit_base").fetchone()
        return (row[0], row[1]) if row else None

    def last_before(self, at: str) -> tuple[int, str] | None:
        """The last row written before ``at`` (ISO time): its number and hash."""
        with self._connect() as con:
            row = con.execute(
                "SELECT seq, hash FROM audit WHERE at < ? ORDER BY seq DESC LIMIT 1", (at,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def prune(self, through: tuple[int, str]) -> int:
        """Delete the rows up to ``through`` = (number, hash) and keep it as the chain's
        base; returns how many rows went. Sign the base first (serving.anchor.prune): the
        remaining chain is verifiable from it, and only from it."""
        con = self._connect(wait=False)
        try:
            self._begin(con)
            row = con.execute("SELECT hash FROM audit WHERE seq = ?", (through[0],)).fetchone()
            if row is None or row[0] != through[1]:
                raise AuditUnavailable(f"row {through[0]} is not the one to prune through")
            deleted = con.execute("DELETE FROM audit WHERE seq <= ?", (through[0],)).rowcount
            con.execute(
                "INSERT INTO audit_base VALUES (1, ?, ?, ?) ON CONFLICT (one) DO UPDATE SET "
                "seq = excluded.seq, hash = excluded.hash, pruned_at = excluded.pruned_at",
                (*through, datetime.now(UTC).isoformat(timespec="seconds")),
            )
            con.execute("COMMIT")
            return deleted
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def export_csv(self, platform: str | None, since: str, key_id: str | None = None) -> str:
        """Rows of one platform, or of one key, from ``since`` (ISO date or time), as CSV
        for regulators (a leaked key: what it asked, apart from the platform's others)."""
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["seq", *FIELDS, "hash"])
        where = ["at >= ?"]
        args: list[str] = [since]
        if platform is not None:
            where.append("platform = ?")
            args.append(platform)
        if key_id is not None:
            where.append("key_id = ?")
            args.append(key_id)
        with self._connect() as con:
            for row in con.execute(
                f"SELECT seq, {', '.join(FIELDS)}, hash FROM audit "
                f"WHERE {' AND '.join(where)} ORDER BY seq",
                args,
            ):
                w.writerow(row)
        return out.getvalue()

    def about(self, uscc: str, since: str = "") -> list[dict]:
        """Every request about one household from ``since``: when, which platform, why,
        and which kind of answer it got (never a claimed value: none is stored), for
        answering the household's own request for its query record."""
        out = []
        with self._connect() as con:
            rows = con.execute(
                "SELECT at, platform, endpoint, purpose, subject, outcome FROM audit "
                "WHERE subject LIKE ? AND at >= ? ORDER BY seq",
                (f"%{uscc}%", since),
            ).fetchall()
        for at, platform, endpoint, purpose, subject, outcome in rows:
            told = json.loads(outcome)
            # every position: a feed read can tell several events about one household
            for position, code in enumerate(subject.split(";")):
                if code != uscc:
                    continue
                out.append(
                    {
                        "at": at,
                        "platform": platform,
                        "endpoint": endpoint,
                        "purpose": purpose,
                        "answer": answer_kind(endpoint, told, position),
                    }
                )
        return out


def answer_kind(endpoint: str, outcome: dict, position: int = 0) -> str:
    """What kind of answer an audited request gave about one of its households."""
    if "error" in outcome:
        return f"refused: {outcome['error']}"
    if endpoint == "/v1/verify":
        if not outcome.get("found"):
            return "verification: not registered"
        fields = ", ".join(
            f"{k} {v}"
            for k, v in outcome.get("fields", {}).items()
            if v not in (None, "None", "not_provided")
        )
        return f"verification: status {outcome.get('status')}" + (f"; {fields}" if fields else "")
    if endpoint == "/v1/score":
        if outcome.get("class"):
            objected = (
                f" (under objection: {outcome['objected']})" if outcome.get("objected") else ""
            )
            return (
                f"score: class {outcome['class']}, reasons {outcome.get('reasons', '')}{objected}"
            )
        return f"status only: {outcome.get('status')}"
    if endpoint.startswith("credref objection"):  # the regulator's own steps, not a query
        return f"{endpoint.removeprefix('credref ')}: {outcome.get('outcome', 'opened')}"
    listed = {  # routes naming several households: one item per household, in order
        "/v1/score_batch": ("results", "batch item"),
        "/v1/watch": ("results", "watch"),
        "DELETE /v1/watch": ("results", "unwatch"),
        "GET /v1/changes": ("events", "change-feed event"),
    }
    if endpoint in listed:
        field_name, label = listed[endpoint]
        items = outcome.get(field_name, "").split(";")
        item = items[position] if position < len(items) else "?"
        return f"{label}: {item}"
    return f"http {outcome.get('http')}"


class GroupWriter:
    """Group commit for one process, on its event loop: requests submit rows and await
    their commit.

    Rows submitted while the loop runs one round of callbacks are appended in one
    transaction at the end of that round, so many concurrent requests cost one lock
    acquisition and one commit instead of one each, and the writers of several processes
    rarely meet. The commit runs on the loop itself (a fraction of a millisecond): a
    writer thread would cost more in GIL hand-overs than the commit costs. When another
    process holds the lock, the batch is retried every 0.2 ms without blocking the loop,
    for up to the log's ``timeout_s``. A row's future resolves only once it is committed,
    or fails with :class:`AuditUnavailable`, so the caller can still fail closed.
    """

    MAX_BATCH = 512
    RETRY_S = 0.0002

    def __init__(self, log: AuditLog):
        self.log = log
        self._con: Connection | None = None
        self._pending: list[tuple[AuditRecord, asyncio.Future]] = []
        self._scheduled = False
        self._deadline: float | None = None  # while a batch waits for the lock

    def submit(self, record: AuditRecord) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((record, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        batch = self._pending[: self.MAX_BATCH]
        try:
            if self._con is None:
                self._con = self.log._connect(wait=False)
            hashes = self.log.append_many([r for r, _ in batch], self._con, retry=False)
        except LockBusy:
            if self._deadline is None:
                self._deadline = time.monotonic() + self.log.timeout_s
            if time.monotonic() < self._deadline:
                loop.call_later(self.RETRY_S, self._flush)
                return
            self._fail(batch, AuditUnavailable(f"audit store {self.log.place.label} stayed locked"))
        except Exception as e:
            self._fail(batch, e if isinstance(e, AuditUnavailable) else AuditUnavailable(str(e)))
        else:
            for (_, fut), h in zip(batch, hashes, strict=True):
                if not fut.done():  # a caller that went away leaves a cancelled future
                    fut.set_result(h)
        self._deadline = None
        del self._pending[: len(batch)]
        if self._pending:
            loop.call_soon(self._flush)
        else:
            self._scheduled = False

    def _fail(self, batch: list, err: AuditUnavailable) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(err)


def _add_later_columns(con: Connection) -> None:
    """A SQLite log made before a column existed gets it (rows of then hash without it)."""
    columns = {r[1] for r in con.execute("PRAGMA table_info(audit)")}
    for name in LATER_FIELDS:
        if name not in columns:
            con.execute(f"ALTER TABLE audit ADD COLUMN {name} TEXT")
