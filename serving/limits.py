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
  ``reserved`` (5) in 365 days draw on a shared pool of ``household_pool`` (5). The pool
  bounds what several platforms together can learn (at most ``5 P + 5`` guesses a year
  for P platforms, instead of ``10 P``); the reserved guesses are why one platform
  exhausting the pool cannot stop another from verifying its own applicant: every
  platform keeps its first five guesses, and a ``match`` is never refused for the pool.
  (It is refused once a field is limited for that pair: answering matches but refusing
  mismatches would turn the refusal itself into the oracle.)
- **Per platform, per day**: at most ``platform_daily`` (20,000) guesses over all its
  households and keys: a bound on breadth (many households, few guesses each).
- **Per key, per day**: at most :data:`KEY_SHARE` of its platform's daily guesses, so one
  misused or leaked key cannot spend the allowance its platform's other keys verify with.
- **Distinct households a day, on every path** (the *household budget*): per key its
  ``daily_households`` and per platform its ``platform_daily_households`` (``credref keys
  create`` / ``credref keys platform``), a key never more than :data:`KEY_SHARE` of its
  platform's. Every household a verification names is charged; on ``/v1/score``,
  ``/v1/score_batch`` and ``/v1/watch`` a household the platform has no relation with
  (:mod:`serving.relation`) is charged and refused. A bound on walking the register
  (found / not found, status, class) with a stolen or misused key.

Why the first five guesses are the platform's own: guesses beyond a platform's
``reserved`` in a year draw on the household's pool shared by all platforms, so once
others have spent the pool a platform has only its reserved guesses left. With
``reserved`` equal to ``pair_daily`` a platform's applicant always keeps a whole day of
typos (five) that no other platform's guesses can take; only a sixth mismatch in a year
can meet a pool others spent (it was three, and the fourth claim, even a correct one,
was refused for up to a year).

Days are China Standard Time (UTC+8, no daylight saving) calendar days. A refused request
gets ``429`` with ``Retry-After`` (seconds until the limit frees a guess) and is audited
like any other. State lives in one SQLite file in WAL mode shared by every worker, so the
limits hold across workers and restarts; if it cannot be written the request fails closed
(``503 limits_unavailable``), like the audit.

Expected cost of the searches in the issue, with these numbers (:func:`expected_days`):
one platform gets 10 guesses a year on a field of a household (5 reserved + the pool's
5), the three pilot platforms together 20. An ID number from a birth date (160
candidates) then takes one platform 7.5 years on average and all three together 3.5
years; an operator name from a surname (2,612 candidates) 130 and 65 years. A household's
registration lives about 4.7 years on average (Hangzhou, DOMAIN.md), and every guess is
audited and counted on ``/metrics`` long before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from serving.state import Connection, Place, Postgres, place

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
    """CREATE TABLE IF NOT EXISTS platform_households (
        platform TEXT NOT NULL, day TEXT NOT NULL, subject TEXT NOT NULL,
        PRIMARY KEY (platform, day, subject))""",
    """CREATE TABLE IF NOT EXISTS platform_households_day (
        platform TEXT NOT NULL, day TEXT NOT NULL, households INTEGER NOT NULL,
        PRIMARY KEY (platform, day))""",
    """CREATE TABLE IF NOT EXISTS key_guess_day (
        key_id TEXT NOT NULL, day TEXT NOT NULL, guesses INTEGER NOT NULL,
        PRIMARY KEY (key_id, day))""",
    # The last verification with a match on the operator's identity, per platform and
    # household: the relation a platform needs before it is told about the household
    # (serving.relation), and before it may watch it (serving.watch).
    """CREATE TABLE IF NOT EXISTS matches (
        platform TEXT NOT NULL, subject TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (platform, subject))""",
)


#: No key may spend more than this share of its platform's daily allowances (distinct
#: households, guesses): one misused key cannot block the platform's other keys.
KEY_SHARE = 0.5
#: Fields whose match makes a relation with the household: the operator's identity,
#: never the shop's name alone (anyone can read that off the shop front).
RELATION_FIELDS = ("operator_name", "operator_id_number")


@dataclass(frozen=True)
class LimitPolicy:
    pair_daily: int = 5
    pair_yearly: int = 10
    reserved: int = 5
    household_pool: int = 5
    platform_daily: int = 20_000

    @property
    def key_daily(self) -> int:
        """Guesses a day one key may make: its share of the platform's."""
        return max(1, int(self.platform_daily * KEY_SHARE))


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
class Asker:
    """Who asks: a key, its platform, and their household budgets (serving.keys)."""

    platform: str
    key_id: str
    key_households: int
    platform_households: int

    @property
    def key_budget(self) -> int:
        """Distinct households a day for this key: its own, at most its platform's share."""
        return min(self.key_households, max(1, int(self.platform_households * KEY_SHARE)))


@dataclass(frozen=True)
class Ask:
    """One verification: who asks, about whom, which fields are claimed."""

    asker: Asker
    subject: str
    fields: tuple[str, ...]

    @property
    def platform(self) -> str:
        return self.asker.platform


KEY_BUDGET = "household_budget_exhausted"
PLATFORM_BUDGET = "platform_budget_exhausted"
BUDGET_MESSAGES = {
    KEY_BUDGET: "this key has asked about its daily number of distinct households",
    PLATFORM_BUDGET: "this platform has asked about its daily number of distinct households",
}


class VerifyLimits:
    """The limits' state (a SQLite file shared by one host's workers, or PostgreSQL shared
    by every host: serving.state) and the one check-and-record transaction per
    verification."""

    def __init__(
        self,
        where: Path | Postgres | Place,
        policy: LimitPolicy | None = None,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ):
        self.place = place(where, "limits")
        self.path = self.place.path
        self.policy = policy or LimitPolicy()
        self.timeout_s = timeout_s
        self.clock = clock
        self._con: Connection | None = None
        self._purged_day: str | None = None

    def _connection(self) -> Connection:
        if self._con is None:
            try:
                self.place.prepare(_DDL, None)
                self._con = self.place.connect(wait=False)  # begin_write retries instead
            except self.place.errors as e:
                raise LimitsUnavailable(f"limits store cannot be opened: {type(e).__name__}") from e
        return self._con

    def verify(self, ask: Ask, judge: Callable[[], dict[str, bool]]) -> dict[str, bool]:
        """Check every limit for ``ask``, then call ``judge`` (field -> matched) and record
        its mismatches, all in one transaction: two workers cannot both spend the last
        guess. Raises :class:`LimitReached` before judging if any limit is spent."""
        with self._transaction() as (con, now, day):
            spent = self._charge(con, ask.asker, [ask.subject], day)
            if spent:
                code = spent[ask.subject]
                raise LimitReached(code, BUDGET_MESSAGES[code], seconds_to_next_day(now), [])
            pool_use = self._check_fields(con, ask, day, now)
            matched = judge()
            self._record(con, ask, day, now, matched, pool_use)
        return matched

    @contextmanager
    def _transaction(self) -> Iterator[tuple[Connection, float, str]]:
        """One write transaction on the store, after the daily purge: committed at the end,
        rolled back on any exception (a :class:`LimitReached` included); a store that
        cannot be used raises :class:`LimitsUnavailable`."""
        now = self.clock()
        day = cst_day(now)
        con = self._connection()
        try:
            self.place.begin_write(con, self.timeout_s)
            try:
                self._purge(con, now, day)
                yield con, now, day
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except self.place.errors as e:
            self._drop_connection()
            raise LimitsUnavailable(f"limits store cannot be written: {type(e).__name__}") from e

    def _purge(self, con: Connection, now: float, day: str) -> None:
        """Once a day per process: drop what no limit can count any more."""
        if self._purged_day == day:
            return
        con.execute("DELETE FROM guesses WHERE at < ?", (now - YEAR_S - 86400,))
        con.execute("DELETE FROM matches WHERE at < ?", (now - YEAR_S,))
        con.execute("DELETE FROM key_households WHERE day < ?", (day,))
        con.execute("DELETE FROM key_day WHERE day < ?", (day,))
        con.execute("DELETE FROM platform_day WHERE day < ?", (day,))
        con.execute("DELETE FROM platform_households WHERE day < ?", (day,))
        con.execute("DELETE FROM platform_households_day WHERE day < ?", (day,))
        con.execute("DELETE FROM key_guess_day WHERE day < ?", (day,))
        self._purged_day = day

    def charge(self, asker: Asker, subjects: list[str]) -> dict[str, str]:
        """Charge ``subjects`` to the asker's household budgets for today, in order, in one
        transaction; returns those refused, each with its code (key's or platform's
        budget spent). A household already charged today costs nothing again."""
        with self._transaction() as (con, _, day):
            return self._charge(con, asker, list(dict.fromkeys(subjects)), day)

    def _charge(
        self, con: Connection, asker: Asker, subjects: list[str], day: str
    ) -> dict[str, str]:
        key_used = _count(con, "key_day", "key_id", asker.key_id, day)
        platform_used = _count(con, "platform_households_day", "platform", asker.platform, day)
        refused: dict[str, str] = {}
        key_new = platform_new = 0
        for subject in subjects:
            new_for_key = not con.execute(
                "SELECT 1 FROM key_households WHERE key_id = ? AND day = ? AND subject = ?",
                (asker.key_id, day, subject),
            ).fetchone()
            new_for_platform = not con.execute(
                "SELECT 1 FROM platform_households WHERE platform = ? AND day = ? AND subject = ?",
                (asker.platform, day, subject),
            ).fetchone()
            if new_for_key and key_used + key_new >= asker.key_budget:
                refused[subject] = KEY_BUDGET
                continue
            if new_for_platform and platform_used + platform_new >= asker.platform_households:
                refused[subject] = PLATFORM_BUDGET
                continue
            if new_for_key:
                con.execute(
                    "INSERT INTO key_households VALUES (?, ?, ?)", (asker.key_id, day, subject)
                )
                key_new += 1
            if new_for_platform:
                con.execute(
                    "INSERT INTO platform_households VALUES (?, ?, ?)",
                    (asker.platform, day, subject),
                )
                platform_new += 1
        _add(con, "key_day", "households", asker.key_id, day, key_new)
        _add(con, "platform_households_day", "households", asker.platform, day, platform_new)
        return refused

    def _check_fields(self, con: Connection, ask: Ask, day: str, now: float) -> dict:
        """Which claimed fields may be judged; whether a mismatch on each would draw on the
        household pool. Raises on the first spent limit (naming every limited field)."""
        p, since = self.policy, now - YEAR_S
        limited: list[str] = []
        retry = 0
        pool_use: dict[str, bool] = {}
        daily_caps = (  # the platform's guesses today, and this key's share of them
            ("platform_day", "platform", ask.platform, p.platform_daily, "platform_guess_limit",
             "this platform has used its daily number of mismatching claims"),
            ("key_guess_day", "key_id", ask.asker.key_id, p.key_daily, "key_guess_limit",
             "this key has used its share of the platform's daily mismatching claims"),
        )  # fmt: skip
        for table, who_column, who, cap, code, message in daily_caps if ask.fields else ():
            if _count(con, table, who_column, who, day) >= cap:
                raise LimitReached(code, message, seconds_to_next_day(now), list(ask.fields))
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
        con: Connection,
        ask: Ask,
        day: str,
        now: float,
        matched: dict[str, bool],
        pool_use: dict[str, bool],
    ) -> None:
        if any(matched.get(f, False) for f in ask.fields if f in RELATION_FIELDS):
            self._remember(con, ask.platform, [ask.subject], now)
        misses = [f for f in ask.fields if not matched.get(f, False)]
        if not misses:
            return
        con.executemany(
            "INSERT INTO guesses VALUES (?, ?, ?, ?, ?, ?)",
            [(ask.platform, ask.subject, f, now, day, int(pool_use[f])) for f in misses],
        )
        _add(con, "platform_day", "guesses", ask.platform, day, len(misses))
        _add(con, "key_guess_day", "guesses", ask.asker.key_id, day, len(misses))

    @staticmethod
    def _remember(con: Connection, platform: str, subjects: list[str], at: float) -> None:
        con.executemany(
            "INSERT INTO matches VALUES (?, ?, ?) "
            "ON CONFLICT (platform, subject) DO UPDATE SET at = excluded.at",
            [(platform, s, at) for s in subjects],
        )

    def remember_matches(self, platform: str, subjects: list[str]) -> None:
        """Record operator matches made elsewhere: for a test's or a benchmark's set-up
        of relations (the service records its own in :meth:`verify`)."""
        with self._transaction() as (con, now, _):
            self._remember(con, platform, subjects, now)

    def matched_since(self, platform: str, subjects: list[str], days: float) -> set[str]:
        """Which of ``subjects`` the platform verified with a match on the operator's
        identity (:data:`RELATION_FIELDS`) in the last ``days``."""
        since = self.clock() - days * 86400
        if len(subjects) == 1:  # /v1/score's case: a plain look-up by the primary key
            query, args = "subject = ?", (platform, since, subjects[0])
        else:
            query = "subject IN (SELECT value FROM json_each(?))"
            args = (platform, since, json.dumps(subjects))
        try:
            rows = (
                self._connection()
                .execute(
                    f"SELECT subject FROM matches WHERE platform = ? AND at >= ? AND {query}", args
                )
                .fetchall()
            )
        except self.place.errors as e:
            self._drop_connection()
            raise LimitsUnavailable(f"limits store cannot be read: {type(e).__name__}") from e
        return {r[0] for r in rows}

    def _drop_connection(self) -> None:
        """Forget a connection that failed: the next call opens a new one."""
        con, self._con = self._con, None
        if con is not None:
            with suppress(Exception):  # already broken: nothing more to release
                con.close()

    def close(self) -> None:
        self._drop_connection()


def _count(con: Connection, table: str, who_column: str, who: str, day: str) -> int:
    row = con.execute(
        f"SELECT * FROM {table} WHERE {who_column} = ? AND day = ?", (who, day)
    ).fetchone()
    return row[2] if row else 0


def _add(con: Connection, table: str, column: str, who: str, day: str, n: int) -> None:
    """Add ``n`` to today's counter (tables keyed by (who, day), one counter column)."""
    if n:
        con.execute(
            f"INSERT INTO {table} VALUES (?, ?, ?) "
            f"ON CONFLICT ({who_column(table)}, day) "
            f"DO UPDATE SET {column} = {table}.{column} + excluded.{column}",
            (who, day, n),
        )


def who_column(table: str) -> str:
    """The column naming whose counter a daily table holds."""
    return "key_id" if table.startswith("key_") else "platform"
