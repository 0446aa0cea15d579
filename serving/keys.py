"""Platform API keys: stored only as SHA-256 hashes, scoped, revocable (SQLite).

A key is shown once, at creation: ``crk_<key id>_<secret>``. Keys carry 256 bits of
randomness, so a plain SHA-256 is the right stored form (a slow password hash protects
low-entropy secrets, which these are not). Look-up is by hash, and the stored hash is
compared with ``hmac.compare_digest``; a key never appears in logs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

#: verify: field verification; score: score, class, reasons; score:pd: also the PD;
#: batch: the batch endpoint; watch: the watch list and the change feed (merchant
#: monitoring); metrics: read /metrics (for the operator's scraper).
SCOPES = ("verify", "score", "score:pd", "batch", "watch", "metrics")
#: Distinct households a key may verify per day unless set at creation: above a large
#: platform's daily onboarding, far below a walk of the register (serving.limits).
DEFAULT_DAILY_HOUSEHOLDS = 20_000
#: Households a key may watch unless set at creation (serving.watch).
DEFAULT_WATCH_CAP = 100_000

_DDL = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      TEXT PRIMARY KEY,
    platform    TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT,
    daily_households INTEGER NOT NULL DEFAULT 20000,
    watch_cap   INTEGER NOT NULL DEFAULT 100000
)"""
_COLUMNS = "key_id, platform, key_hash, scopes, created_at, revoked_at, daily_households, watch_cap"


class KeyRefused(ValueError):
    """A key operation was refused (unknown platform name, scope, or key id)."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    platform: str
    scopes: frozenset[str]
    created_at: str
    revoked_at: str | None
    daily_households: int = DEFAULT_DAILY_HOUSEHOLDS
    watch_cap: int = DEFAULT_WATCH_CAP

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _key(row: tuple) -> ApiKey:
    return ApiKey(row[0], row[1], frozenset(row[3].split(",")), row[4], row[5], row[6], row[7])


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyStore:
    """The key table in a SQLite file (WAL mode, shared by all service workers)."""

    def __init__(self, path: Path):
        self.path = path
        self._reader: sqlite3.Connection | None = None  # kept for authenticate()
        self._known: dict[str, tuple] = {}  # key hash -> its row, while data_version holds
        self._version: int | None = None
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_DDL)
            columns = {r[1] for r in con.execute("PRAGMA table_info(api_keys)")}
            for name, default in (  # a store made before the budget or the cap existed
                ("daily_households", DEFAULT_DAILY_HOUSEHOLDS),
                ("watch_cap", DEFAULT_WATCH_CAP),
            ):
                if name not in columns:
                    con.execute(
                        f"ALTER TABLE api_keys ADD COLUMN {name} INTEGER NOT NULL DEFAULT {default}"
                    )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def create(
        self,
        platform: str,
        scopes: list[str],
        daily_households: int = DEFAULT_DAILY_HOUSEHOLDS,
        watch_cap: int = DEFAULT_WATCH_CAP,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns it and the secret, which is never stored or shown again."""
        if not platform or not platform.replace("-", "").replace("_", "").isalnum():
            raise KeyRefused(f"platform name must be letters, digits, '-' or '_': {platform!r}")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise KeyRefused(
                f"scopes must be a non-empty subset of {list(SCOPES)}; unknown: {unknown}"
            )
        if daily_households < 1:
            raise KeyRefused("the daily household budget must be at least 1")
        if watch_cap < 0:
            raise KeyRefused("the watch cap must be at least 0")
        key_id = secrets.token_hex(6)
        secret = f"crk_{key_id}_{secrets.token_urlsafe(32)}"
        created = _now()
        with self._connect() as con:
            con.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, ?, ?)",
                (
                    key_id,
                    platform,
                    _hash(secret),
                    ",".join(sorted(set(scopes))),
                    created,
                    daily_households,
                    watch_cap,
                ),
            )
        key = ApiKey(
            key_id, platform, frozenset(scopes), created, None, daily_households, watch_cap
        )
        return key, secret

    def authenticate(self, secret: str | None) -> ApiKey | None:
        """The active key for a presented secret, or None (unknown, malformed or revoked)."""
        if not secret or not secret.startswith("crk_"):
            return None
        digest = _hash(secret)
        with self._lock:
            if self._reader is None:
                self._reader = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            # Known keys are kept in memory until the table changes: data_version moves
            # with every commit by another connection (a `keys revoke` or `keys create`),
            # so a revocation still counts from the very next request.
            version = self._reader.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._known.clear()
                self._version = version
            row = self._known.get(digest)
            if row is None:
                row = self._reader.execute(
                    f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ?",
                    (digest,),
                ).fetchone()
                if row is not None:  # only stored keys: unknown guesses cannot fill memory
                    self._known[digest] = row
        if row is None or not hmac.compare_digest(row[2], digest) or row[5] is not None:
            return None
        return _key(row)

    def list(self) -> list[ApiKey]:
        with self._connect() as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id"
            ).fetchall()
        return [_key(r) for r in rows]

    def revoke(self, key_id: str) -> None:
        """Revoke at once: the next request with that key is refused."""
        with self._connect() as con:
            n = con.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            ).rowcount
        if n == 0:
            raise KeyRefused(f"no active key with id {key_id!r}")
