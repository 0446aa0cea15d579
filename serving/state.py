"""Where the service's shared state lives: one SQLite file per store, or PostgreSQL.

The stores (keys, audit chain, verification limits and budgets, watch lists, feed events
and cursors) are written once, against a *place*:

- :class:`SQLiteFile` (the embedded default): the store's own file in WAL mode, shared by
  the workers of one host. A writer takes the file's lock with ``BEGIN IMMEDIATE``.
- :class:`PostgresStore`: the store's tables in one PostgreSQL database shared by every
  host (``CREDREF_DATABASE_URL``). A writer begins a transaction and takes the store's
  transaction-scoped advisory lock, so writers of one store are serialised exactly as on
  SQLite (one hash chain, one check-and-record of a guess), while readers never wait.
  The schema is Alembic's (``credref db upgrade``): a place refuses a database whose
  schema is not the code's.

The stores write SQL both engines read alike: ``?`` parameters, ``ON CONFLICT (...) DO``,
``BIGINT``/``TEXT``/``DOUBLE PRECISION``. The PostgreSQL connection turns ``?`` into
``%s`` and SQLite's ``json_each(?)`` (a list passed as one JSON parameter) into
``json_array_elements_text``; nothing else is translated.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, Protocol

from serving.sqlite_lock import LockBusy, begin_immediate
from settings import Settings

#: The stores and their advisory-lock numbers on PostgreSQL (any fixed distinct numbers).
STORES = {"keys": 7_301_001, "audit": 7_301_002, "limits": 7_301_003, "watch": 7_301_004}
RETRY_S = 0.0002
#: A store's lock for steps longer than a transaction: its writer lock's number plus this.
EXCLUSIVE_OFFSET = 1000


class Connection(Protocol):
    """What a store uses of a connection (sqlite3's own methods, in autocommit mode)."""

    @property
    def in_transaction(self) -> bool: ...

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: Any) -> Any: ...
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...
    def close(self) -> None: ...


class Place(Protocol):
    """One store's home: how to connect, take its write lock, and make its tables."""

    @property
    def label(self) -> str: ...  # for messages: a path or ``postgresql:<store>``, never a password
    @property
    def errors(self) -> tuple[type[BaseException], ...]: ...  # what a broken store raises
    @property
    def path(self) -> Path | None: ...  # the SQLite file (None on PostgreSQL)

    def connect(self, wait: bool = True) -> Connection: ...
    def begin_write(self, con: Connection, timeout_s: float, retry: bool = True) -> None: ...
    def begin_read(self, con: Connection) -> None: ...
    def prepare(self, ddl: Sequence[str], upgrade: Callable[[Connection], None] | None) -> None: ...
    def exclusive(self) -> AbstractContextManager[None]: ...


@contextmanager
def writing(store: Place, timeout_s: float) -> Iterator[Connection]:
    """A connection holding ``store``'s write lock, in a transaction the block ends with
    ``COMMIT``; rolled back if the block does not (an error, a refusal) and closed."""
    con = store.connect()
    try:
        store.begin_write(con, timeout_s)
    except BaseException:  # no lock, no transaction: nothing to roll back
        con.close()
        raise
    try:
        yield con
    finally:
        if con.in_transaction:
            con.execute("ROLLBACK")
        con.close()


# --- SQLite: the embedded default ------------------------------------------------------


class SQLiteFile:
    """A store in its own SQLite file (WAL; a committed row survives a killed process)."""

    errors: tuple[type[BaseException], ...] = (OSError, sqlite3.Error, TimeoutError)

    def __init__(self, path: Path, timeout_s: float = 10.0):
        self.path = Path(path)
        self.label = str(path)
        self.timeout_s = timeout_s

    def connect(self, wait: bool = True) -> Connection:
        con = sqlite3.connect(
            self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False
        )
        # WAL + NORMAL: a committed row survives any process crash; only an OS crash or
        # power loss can drop the last commits.
        con.execute("PRAGMA synchronous=NORMAL")
        if not wait:  # no busy handler: begin_write retries every 0.2 ms instead
            con.execute("PRAGMA busy_timeout=0")
        return con  # type: ignore[return-value]  # sqlite3's own connection is the model

    def begin_write(self, con: Connection, timeout_s: float, retry: bool = True) -> None:
        begin_immediate(con, timeout_s, retry)  # type: ignore[arg-type]

    def begin_read(self, con: Connection) -> None:
        con.execute("BEGIN")  # a read transaction: one state of the file (WAL snapshot)

    def exclusive(self) -> AbstractContextManager[None]:
        """Nothing to exclude: one host's refresh runs its steps one after another."""
        return nullcontext()

    def prepare(self, ddl: Sequence[str], upgrade: Callable[[Connection], None] | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self.connect()
        try:
            con.execute("PRAGMA journal_mode=WAL")
            for statement in ddl:
                con.execute(statement)
            if upgrade is not None:  # a file made by an older credref
                upgrade(con)
        finally:
            con.close()


# --- PostgreSQL: shared by every host ---------------------------------------------------

_JSON_LIST = re.compile(r"SELECT value FROM json_each\(\?\)")


def _postgres_sql(sql: str) -> str:
    sql = _JSON_LIST.sub("SELECT value FROM json_array_elements_text(?::json) AS value", sql)
    return sql.replace("%", "%%").replace("?", "%s")


def _plain(value: Any) -> Any:
    """Parameters as PostgreSQL takes them: NumPy scalars as Python's, bools as 0/1 (the
    stores' flags are integers on both engines)."""
    if isinstance(value, bool):
        return int(value)
    item = getattr(value, "item", None)
    return item() if callable(item) else value


class PostgresConnection:
    """A pooled psycopg connection with sqlite3's surface (autocommit; explicit BEGIN)."""

    def __init__(self, pool: Any):
        self._pool = pool
        self._con = pool.getconn()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._con.execute(_postgres_sql(sql), [_plain(v) for v in params])

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        cur = self._con.cursor()
        cur.executemany(_postgres_sql(sql), [[_plain(v) for v in row] for row in rows])
        return cur

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus  # psycopg loads only with PostgreSQL

        return self._con.info.transaction_status != TransactionStatus.IDLE

    def begin_locked(self, lock_id: int) -> bool:
        """BEGIN and try the advisory lock in one round trip (the simple query protocol:
        no parameters); whether the lock was taken."""
        cur = self._con.execute(f"BEGIN; SELECT pg_try_advisory_xact_lock({int(lock_id)})")
        cur.nextset()
        row = cur.fetchone()
        return bool(row and row[0])

    def rollback(self) -> None:
        self._con.execute("ROLLBACK")

    def close(self) -> None:
        if self._con is None:
            return
        try:
            if not self._con.closed and self.in_transaction:
                self._con.execute("ROLLBACK")
        except Exception:  # a broken connection: the pool discards it
            pass
        self._pool.putconn(self._con)
        self._con = None

    def __enter__(self) -> PostgresConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: A worker's event loop waits on the database in a few places (the audit's group commit,
#: the limits' transaction): a server that stops answering must end in an error (a 503),
#: never a hang. Connecting waits 3 s; a connection whose data goes unacknowledged for 5 s
#: is dropped (tcp_user_timeout), and an idle one is probed by keepalives.
LIBPQ_OPTIONS = {
    "connect_timeout": 3,
    "tcp_user_timeout": 5000,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}


class Postgres:
    """One PostgreSQL database holding every store, with this process's connection pool.

    The pool opens lazily (a forked service worker makes its own). It does not check a
    connection before lending it (a round trip on every request): after a server
    restart, a request on a broken connection answers 503 and the pool discards that
    connection when it comes back, so a restart costs a few 503s and nothing after."""

    _shared: ClassVar[dict[str, Postgres]] = {}
    _guard = threading.Lock()

    def __init__(self, url: str, pool_size: int = 4, wait_s: float = 2.0):
        self.url = url
        self.pool_size = pool_size
        self.wait_s = wait_s  # for a connection: past it, the request fails closed (503)
        self._pool: Any = None
        self._checked = False

    @classmethod
    def shared(cls, url: str, pool_size: int = 4) -> Postgres:
        """The process's one instance for ``url`` (one pool, however many stores; the
        first call sets its size). A service worker holds two connections (the audit's
        writer, the limits) and borrows one per request for keys and watches."""
        with cls._guard:
            if url not in cls._shared:
                cls._shared[url] = cls(url, pool_size)
            return cls._shared[url]

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        import psycopg  # psycopg loads only with PostgreSQL
        import psycopg_pool

        return (OSError, psycopg.Error, psycopg_pool.PoolTimeout, TimeoutError)

    def pool(self) -> Any:
        with self._guard:
            if self._pool is None:
                from psycopg_pool import ConnectionPool  # loads only with PostgreSQL

                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.pool_size,
                    kwargs={"autocommit": True, **LIBPQ_OPTIONS},
                    timeout=self.wait_s,
                    open=True,
                )
            return self._pool

    def check_schema(self) -> None:
        """Refuse a database whose schema is not this code's (once per process)."""
        if self._checked:
            return
        # Alembic and psycopg load only with a shared database, not in every worker
        from serving.migrations import current_revision, head_revision

        found, head = current_revision(self.url), head_revision()
        if found != head:
            raise SchemaNotCurrent(
                f"the database's schema is at {found or 'nothing'}, this credref needs "
                f"{head}: run `credref db upgrade`"
            )
        self._checked = True

    def close(self) -> None:
        with self._guard:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


class SchemaNotCurrent(RuntimeError):
    """The shared database has not been upgraded to this code's schema."""


class PostgresStore:
    """One store's tables in the shared database, with the store's own writer lock."""

    path: Path | None = None

    def __init__(self, db: Postgres, store: str):
        self.db = db
        self.store = store
        self.label = f"postgresql:{store}"
        self.lock_id = STORES[store]

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        return (*self.db.errors, SchemaNotCurrent)

    def connect(self, wait: bool = True) -> Connection:
        return PostgresConnection(self.db.pool())

    def begin_write(self, con: Connection, timeout_s: float, retry: bool = True) -> None:
        """BEGIN, then the store's advisory lock, tried every 0.2 ms for up to
        ``timeout_s`` (``retry=False``: :class:`LockBusy` at once, like SQLite's)."""
        assert isinstance(con, PostgresConnection)
        deadline = time.monotonic() + timeout_s
        if con.begin_locked(self.lock_id):  # the usual case: one round trip
            return
        while True:
            got = con.execute("SELECT pg_try_advisory_xact_lock(?)", (self.lock_id,)).fetchone()
            if got and got[0]:
                return
            if not retry or time.monotonic() >= deadline:
                con.execute("ROLLBACK")
                if not retry:
                    raise LockBusy()
                raise TimeoutError(f"{self.label} stayed locked")
            time.sleep(RETRY_S)

    def begin_read(self, con: Connection) -> None:
        con.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")  # one state of the database

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One host at a time through a read-compute-write step longer than a transaction
        (the change feed's event step: read the last answers, compare, record), held by a
        session advisory lock beside the store's writer lock."""
        con = self.connect()
        try:
            con.execute("SELECT pg_advisory_lock(?)", (self.lock_id + EXCLUSIVE_OFFSET,))
            try:
                yield
            finally:
                con.execute("SELECT pg_advisory_unlock(?)", (self.lock_id + EXCLUSIVE_OFFSET,))
        finally:
            con.close()

    def prepare(self, ddl: Sequence[str], upgrade: Callable[[Connection], None] | None) -> None:
        self.db.check_schema()  # the tables are Alembic's, not the store's DDL


def place(where: Path | Postgres | Place, store: str) -> Place:
    """The place of ``store``: a path is its SQLite file; a :class:`Postgres` database
    holds it with the others; a place is itself."""
    if isinstance(where, Postgres):
        return PostgresStore(where, store)
    if isinstance(where, str | Path):
        return SQLiteFile(Path(where))
    return where


def located(s: Settings, store: str) -> Path | Postgres:
    """Where ``store`` lives under these settings: the shared database if one is set,
    else its SQLite file under the home."""
    if s.database_url is not None:
        return Postgres.shared(s.database_url.get_secret_value())
    paths = {"keys": s.keys_path, "audit": s.audit_path, "limits": s.limits_path}
    return {**paths, "watch": s.watch_path}[store]
