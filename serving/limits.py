"""Guessing limits for verification: a platform confirms what its applicant told it; it
does not search the register.

``/v1/verify`` answers ``match`` or ``mismatch`` per claimed field. Asked without limit, a
``mismatch`` answer is an oracle: with a surname known, an operator name falls in a few
thousand guesses; with a birth date known, an ID number in a couple of hundred. These
limits make that search take years while a platform onboarding its real applicants never
meets them. A *guess* below is one ``mismatch`` answer on one field; a ``match`` costs
nothing, so re-verifying a merchant with correct data is never limited.

The policy (:class:`LimitPolicy`; the numbers and their reasons):

- **Per platform and household, per field**: at most ``pair_daily`` (5) guesses a day and
  ``pair_yearly`` (10) in any 365 days. Counted per *platform*, over all its keys, so a
  platform cannot buy more guesses with more keys. An applicant who mistypes a field a
  few times is still answered; a search is not.
- **Per household, per field, across platforms**: guesses beyond each platform's first
  ``reserved`` (3) in 365 days draw on a shared pool of ``household_pool`` (5). The pool
  bounds what several platforms together can learn (at most ``3 P + 5`` guesses a year
  for P platforms, instead of ``10 P``); the reserved guesses are why one platform
  exhausting the pool cannot stop another from verifying its own applicant: every
  platform keeps its first three guesses, and a ``match`` is never refused for the pool.
  (It is refused once a field is limited for that pair: answering matches but refusing
  mismatches would turn the refusal itself into the oracle.)
- **Per platform, per day**: at most ``platform_daily`` (20,000) guesses over all its
  households and keys: a bound on breadth (many households, few guesses each).
- **Per key, per day**: at most the key's ``daily_households`` distinct households asked
  about (set at ``credref keys create --daily-households N``): a bound on walking the
  register (found / not found) with a stolen or misused key.

Days are China Standard Time (UTC+8, no daylight saving) calendar days. A refused request
gets ``429`` with ``Retry-After`` (seconds until the limit frees a guess) and is audited
like any other. State lives in one SQLite file in WAL mode shared by every worker, so the
limits hold across workers and restarts; if it cannot be written the request fails closed
(``503 limits_unavailable``), like the audit.

Expected cost of the searches in the issue, with these numbers (:func:`expected_days`):
one platform gets 8 guesses a year on a field of a household (3 reserved + the pool's 5),
the three pilot platforms together 14. An ID number from a birth date (160 candidates)
then takes one platform 9.5 years on average and all three together 5.2 years; an
operator name from a surname (2,612 candidates) 163 and 93 years. A household's
registration lives about 4.7 years on average (Hangzhou, DOMAIN.md), and every guess is
audited and counted on ``/metrics`` long before.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from serving.sqlite_lock import begin_immediate

CST = timezone(timedelta(hours=8))
YEAR_S = 365 * 86400.0

_DDL = (
    """CREATE TABLE IF NOT EXISTS guesses (
        platform TEXT NOT NULL, subject TEXT NOT NULL, field TEXT NOT NULL,
        at REAL NOT NULL, day TEXT NOT NULL, pool INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS guesses_subject ON guesses (subject, field, at)",
    """CREATE TABLE IF NOT EXISTS platform_day (
        platform TEXT NOT NULL, day TEXT NOT NULL, guesses INTEGER NOT NULL,
        PRIMARY KEY (platform, day))""",
    """CREATE TABLE IF NOT EXISTS key_households (
        key_id TEXT NOT NULL, day TEXT NOT NULL, subject TEXT NOT NULL,
        PRIMARY KEY (key_id, day, subject))""",
    """CREATE TABLE IF NOT EXISTS key_day (
        key_id TEXT NOT NULL, day TEXT NOT NULL, households INTEGER NOT NULL,
        PRIMARY KEY (key_id, day))""",
    # The last verification with a match, per platform and household: what a platform
    # must have before it may watch the household (serving.watch).
    """CREATE TABLE IF NOT EXISTS matches (
        platform TEXT NOT NULL, subject TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (platform, subject))""",
)


@dataclass(frozen=True)
class LimitPolicy:
    pair_daily: int = 5
    pair_yearly: int = 10
    reserved: int = 3
    household_pool: int = 5
    platform_daily: int = 20_000


class LimitReached(Exception):
    """The request is refused by a guessing limit (429)."""

    def __init__(self, code: str, message: str, retry_after_s: int, fields: list[str]):
        super().__init__(message)
        self.code, self.message, self.retry_after_s, self.fields = (
            code,
            message,
            max(1, retry_after_s),
            fields,
        )


class LimitsUnavailable(RuntimeError):
    """The limits store cannot be read or written: the request must not be answered."""


def cst_day(now: float) -> str:
    return datetime.fromtimestamp(now, CST).date().isoformat()


def seconds_to_next_day(now: float) -> int:
    t = datetime.fromtimestamp(now, CST)
    nxt = datetime.combine(t.date() + timedelta(days=1), datetime.min.time(), CST)
    return int((nxt - t).total_seconds()) + 1


def expected_days(candidates: int, platforms: int, policy: LimitPolicy | None = None) -> float:
    """Expected days until the right value is guessed, the value uniformly placed among
    ``candidates``, guessing at the limits' full rate with ``platforms`` platforms working
    together: the k-th guess is possible on day ``365 * ((k-1) // per_year) + ((k-1) %
    per_year) // per_day``."""
    p = policy or LimitPolicy()
    per_year = min(platforms * p.pair_yearly, platforms * p.reserved + p.household_pool)
    per_day = platforms * p.pair_daily
    days = [365 * (k // per_year) + (k % per_year) // per_day for k in range(candidates)]
    return sum(days) / candidates


@dataclass(frozen=True)
class Ask:
    """One verification: who asks, about whom, which fields are claimed."""

    platform: str
    key_id: str
    daily_households: int
    subject: str
    fields: tuple[str, ...]


class VerifyLimits:
    """The limits' state (SQLite, shared by all workers) and the one check-and-record
    transaction per verification."""

    def __init__(
        self,
        path: Path,
        policy: LimitPolicy | None = None,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ):
        self.path = path
        self.policy = policy or LimitPolicy()
        self.timeout_s = timeout_s
        self.clock = clock
        self._con: sqlite3.Connection | None = None
        self._purged_day: str | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                con.execute("PRAGMA busy_timeout=0")  # begin_immediate retries instead
                for ddl in _DDL:
                    con.execute(ddl)
            except (OSError, sqlite3.Error) as e:
                raise LimitsUnavailable(f"limits store cannot be opened: {type(e).__name__}") from e
            self._con = con
        return self._con

    def verify(self, ask: Ask, judge: Callable[[], dict[str, bool]]) -> dict[str, bool]:
        """Check every limit for ``ask``, then call ``judge`` (field -> matched) and record
        its mismatches, all in one transaction: two workers cannot both spend the last
        guess. Raises :class:`LimitReached` before judging if any limit is spent."""
        now = self.clock()
        day = cst_day(now)
        con = self._connection()
        try:
            begin_immediate(con, self.timeout_s)
            try:
                self._purge(con, now, day)
                self._count_household(con, ask, day, now)
                pool_use = self._check_fields(con, ask, day, now)
                matched = judge()
                self._record(con, ask, day, now, matched, pool_use)
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except (OSError, sqlite3.Error) as e:
            self._con = None
            raise LimitsUnavailable(f"limits store cannot be written: {type(e).__name__}") from e
        return matched

    def _purge(self, con: sqlite3.Connection, now: float, day: str) -> None:
        """Once a day per process: drop what no limit can count any more."""
        if self._purged_day == day:
            return
        con.execute("DELETE FROM guesses WHERE at < ?", (now - YEAR_S - 86400,))
        con.execute("DELETE FROM matches WHERE at < ?", (now - YEAR_S,))
        con.execute("DELETE FROM key_households WHERE day < ?", (day,))
        con.execute("DELETE FROM key_day WHERE day < ?", (day,))
        con.execute("DELETE FROM platform_day WHERE day < ?", (day,))
        self._purged_day = day

    def _count_household(self, con: sqlite3.Connection, ask: Ask, day: str, now: float) -> None:
        new = con.execute(
            "INSERT OR IGNORE INTO key_households VALUES (?, ?, ?)", (ask.key_id, day, ask.subject)
        ).rowcount
        if not new:
            return
        row = con.execute(
            "SELECT households FROM key_day WHERE key_id = ? AND day = ?", (ask.key_id, day)
        ).fetchone()
        used = row[0] if row else 0
        if used >= ask.daily_households:
            raise LimitReached(
                "household_budget_exhausted",
                "this key has asked about its daily number of distinct households",
                seconds_to_next_day(now),
                [],
            )
        con.execute(
            "INSERT INTO key_day VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET households = households + 1",
            (ask.key_id, day),
        )

    def _check_fields(self, con: sqlite3.Connection, ask: Ask, day: str, now: float) -> dict:
        """Which claimed fields may be judged; whether a mismatch on each would draw on the
        household pool. Raises on the first spent limit (naming every limited field)."""
        p, since = self.policy, now - YEAR_S
        limited: list[str] = []
        retry = 0
        pool_use: dict[str, bool] = {}
        platform_row = con.execute(
            "SELECT guesses FROM platform_day WHERE platform = ? AND day = ?", (ask.platform, day)
        ).fetchone()
        if ask.fields and platform_row and platform_row[0] >= p.platform_daily:
            raise LimitReached(
                "platform_guess_limit",
                "this platform has used its daily number of mismatching claims",
                seconds_to_next_day(now),
                list(ask.fields),
            )
        for f in ask.fields:
            rows = con.execute(
                "SELECT platform, at, day, pool FROM guesses WHERE subject = ? AND field = ? AND at >= ?",
                (ask.subject, f, since),
            ).fetchall()
            mine = sorted(at for plat, at, _, _ in rows if plat == ask.platform)
            today = sum(1 for plat, _, d, _ in rows if plat == ask.platform and d == day)
            pool_spent = sum(pool for _, _, _, pool in rows)
            needs_pool = len(mine) >= p.reserved
            if today >= p.pair_daily:
                limited.append(f)
                retry = max(retry, seconds_to_next_day(now))
            elif len(mine) >= p.pair_yearly:
                limited.append(f)
                retry = max(retry, int(mine[len(mine) - p.pair_yearly] + YEAR_S - now) + 1)
            elif needs_pool and pool_spent >= p.household_pool:
                limited.append(f)
                pool_ats = sorted(at for _, at, _, pool in rows if pool)
                retry = max(
                    retry, int(pool_ats[len(pool_ats) - p.household_pool] + YEAR_S - now) + 1
                )
            pool_use[f] = needs_pool
        if limited:
            raise LimitReached(
                "verify_guess_limit",
                "too many mismatching claims on these fields of this household; ask the "
                "applicant to check the registration",
                retry,
                limited,
            )
        return pool_use

    def _record(
        self,
        con: sqlite3.Connection,
        ask: Ask,
        day: str,
        now: float,
        matched: dict[str, bool],
        pool_use: dict[str, bool],
    ) -> None:
        if any(matched.get(f, False) for f in ask.fields):
            con.execute(
                "INSERT INTO matches VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET at = excluded.at",
                (ask.platform, ask.subject, now),
            )
        misses = [f for f in ask.fields if not matched.get(f, False)]
        if not misses:
            return
        con.executemany(
            "INSERT INTO guesses VALUES (?, ?, ?, ?, ?, ?)",
            [(ask.platform, ask.subject, f, now, day, int(pool_use[f])) for f in misses],
        )
        con.execute(
            "INSERT INTO platform_day VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET guesses = guesses + ?",
            (ask.platform, day, len(misses), len(misses)),
        )

    def matched_since(self, platform: str, subjects: list[str], days: float) -> set[str]:
        """Which of ``subjects`` the platform verified with a match in the last ``days``."""
        since = self.clock() - days * 86400
        try:
            rows = (
                self._connection()
                .execute(
                    "SELECT subject FROM matches WHERE platform = ? AND at >= ? "
                    "AND subject IN (SELECT value FROM json_each(?))",
                    (platform, since, json.dumps(subjects)),
                )
                .fetchall()
            )
        except (OSError, sqlite3.Error) as e:
            self._con = None
            raise LimitsUnavailable(f"limits store cannot be read: {type(e).__name__}") from e
        return {r[0] for r in rows}

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
