"""Platform API keys: stored only as SHA-256 hashes, scoped, revocable.

A key is shown once, at creation: ``crk_<key id>_<secret>``. Keys carry 256 bits of
randomness, so a plain SHA-256 is the right stored form (a slow password hash protects
low-entropy secrets, which these are not). Look-up is by hash, and the stored hash is
compared with ``hmac.compare_digest``; a key never appears in logs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from serving.state import Connection, Place, Postgres, place

#: verify: field verification; score: score, class, reasons; score:pd: also the PD;
#: batch: the batch endpoint; watch: the watch list and the change feed (merchant
#: monitoring); metrics: read /metrics (for the operator's scraper).
SCOPES = ("verify", "score", "score:pd", "batch", "watch", "metrics")
#: Distinct households a key may verify per day unless set at creation: above a large
#: platform's daily onboarding, far below a walk of the register (serving.limits).
DEFAULT_DAILY_HOUSEHOLDS = 20_000
#: Households a key may watch unless set at creation (serving.watch).
DEFAULT_WATCH_CAP = 100_000
#: A platform's distinct households a day over all its keys and every path, unless set
#: with ``credref keys platform`` (serving.limits: the household budget).
DEFAULT_PLATFORM_DAILY_HOUSEHOLDS = 100_000
#: Households a platform may watch at once over all its keys, unless set.
DEFAULT_PLATFORM_WATCH_CAP = 500_000

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
_PLATFORMS_DDL = """
CREATE TABLE IF NOT EXISTS platforms (
    platform         TEXT PRIMARY KEY,
    daily_households INTEGER NOT NULL,
    watch_cap        INTEGER NOT NULL
)"""
_COLUMNS = "key_id, platform, key_hash, scopes, created_at, revoked_at, daily_households, watch_cap"
#: A key's row with its platform's budgets (the defaults where none is set).
_SELECT = (
    "SELECT k.key_id, k.platform, k.key_hash, k.scopes, k.created_at, k.revoked_at, "
    "k.daily_households, k.watch_cap, "
    f"coalesce(p.daily_households, {DEFAULT_PLATFORM_DAILY_HOUSEHOLDS}), "
    f"coalesce(p.watch_cap, {DEFAULT_PLATFORM_WATCH_CAP}) "
    "FROM api_keys k LEFT JOIN platforms p ON p.platform = k.platform"
)


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
    platform_daily_households: int = DEFAULT_PLATFORM_DAILY_HOUSEHOLDS
    platform_watch_cap: int = DEFAULT_PLATFORM_WATCH_CAP

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class PlatformLimits:
    platform: str
    daily_households: int
    watch_cap: int


def _key(row: tuple) -> ApiKey:
    return ApiKey(row[0], row[1], frozenset(row[3].split(",")), row[4], row[5], *row[6:10])


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class KeyStore:
    """The key table: a SQLite file shared by one host's workers, or PostgreSQL shared by
    every host (serving.state)."""

    def __init__(self, where: Path | Postgres | Place):
        self.place = place(where, "keys")
        self.path = self.place.path
        self._reader: Connection | None = None  # kept for authenticate() on SQLite
        self._known: dict[str, tuple] = {}  # key hash -> its row, while data_version holds
        self._version: int | None = None
        self._lock = threading.Lock()
        self.place.prepare((_DDL, _PLATFORMS_DDL), _add_budget_columns)

    def _connect(self):
        return self.place.connect()

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
        p = self.platform(platform)
        key = ApiKey(
            key_id,
            platform,
            frozenset(scopes),
            created,
            None,
            daily_households,
            watch_cap,
            p.daily_households,
            p.watch_cap,
        )
        return key, secret

    def authenticate(self, secret: str | None) -> ApiKey | None:
        """The active key for a presented secret, or None (unknown, malformed or revoked)."""
        if not secret or not secret.startswith("crk_"):
            return None
        digest = _hash(secret)
        if self.path is None:  # shared database: read every time, so a revocation made
            with self._connect() as con:  # through another host counts at once
                row = con.execute(f"{_SELECT} WHERE k.key_hash = ?", (digest,)).fetchone()
        else:
            row = self._cached(digest)
        if row is None or not hmac.compare_digest(row[2], digest) or row[5] is not None:
            return None
        return _key(row)

    def _cached(self, digest: str) -> tuple | None:
        with self._lock:
            if self._reader is None:
                self._reader = self.place.connect()
            # Known keys are kept in memory until the table changes: data_version moves
            # with every commit by another connection (a `keys revoke` or `keys create`),
            # so a revocation still counts from the very next request.
            version = self._reader.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._known.clear()
                self._version = version
            row = self._known.get(digest)
            if row is None:
                row = self._reader.execute(f"{_SELECT} WHERE k.key_hash = ?", (digest,)).fetchone()
                if row is not None:  # only stored keys: unknown guesses cannot fill memory
                    self._known[digest] = row
        return row

    def list(self) -> list[ApiKey]:
        with self._connect() as con:
            rows = con.execute(f"{_SELECT} ORDER BY k.created_at, k.key_id").fetchall()
        return [_key(r) for r in rows]

    def set_platform(
        self, platform: str, daily_households: int | None = None, watch_cap: int | None = None
    ) -> PlatformLimits:
        """Set a platform's budgets over all its keys (those not given keep their value)."""
        current = self.platform(platform)
        limits = PlatformLimits(
            platform,
            current.daily_households if daily_households is None else daily_households,
            current.watch_cap if watch_cap is None else watch_cap,
        )
        if limits.daily_households < 2:
            raise KeyRefused("a platform's daily household budget must be at least 2")
        if limits.watch_cap < 0:
            raise KeyRefused("a platform's watch cap must be at least 0")
        with self._connect() as con:
            con.execute(
                "INSERT INTO platforms VALUES (?, ?, ?) ON CONFLICT (platform) DO UPDATE SET "
                "daily_households = excluded.daily_households, watch_cap = excluded.watch_cap",
                (platform, limits.daily_households, limits.watch_cap),
            )
        return limits

    def platform(self, platform: str) -> PlatformLimits:
        """A platform's budgets (the defaults if never set)."""
        with self._connect() as con:
            row = con.execute(
                "SELECT daily_households, watch_cap FROM platforms WHERE platform = ?",
                (platform,),
            ).fetchone()
        if row is None:
            return PlatformLimits(
                platform, DEFAULT_PLATFORM_DAILY_HOUSEHOLDS, DEFAULT_PLATFORM_WATCH_CAP
            )
        return PlatformLimits(platform, *row)

    def revoke(self, key_id: str) -> None:
        """Revoke at once: the next request with that key is refused."""
        with self._connect() as con:
            n = con.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            ).rowcount
        if n == 0:
            raise KeyRefused(f"no active key with id {key_id!r}")


def _add_budget_columns(con) -> None:
    """A key file made before the budget or the cap existed gets them, at their defaults."""
    columns = {r[1] for r in con.execute("PRAGMA table_info(api_keys)")}
    for name, default in (
        ("daily_households", DEFAULT_DAILY_HOUSEHOLDS),
        ("watch_cap", DEFAULT_WATCH_CAP),
    ):
        if name not in columns:
            con.execute(
                f"ALTER TABLE api_keys ADD COLUMN {name} INTEGER NOT NULL DEFAULT {default}"
            )
