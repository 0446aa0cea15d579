"""The shared state on PostgreSQL: the same stores as the embedded SQLite files, shared by
several hosts, with the schema from Alembic (serving.state, serving.migrations).

The stores' own tests (test_keys_audit, test_limits) run on both backends through the
``state`` fixture; these tests are about what only a shared database brings."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import date

import pytest

from serving.audit import AuditLog, AuditRecord, AuditUnavailable
from serving.keys import KeyStore
from serving.limits import Ask, Asker, LimitPolicy, LimitReached, LimitsUnavailable, VerifyLimits
from serving.objections import ObjectionStore
from serving.state import Postgres, SchemaNotCurrent
from serving.watch import WatchStore

CODE = "92440304MA5DKQ0E7Q"


def _columns_sqlite(tmp_path) -> dict[str, set[str]]:
    import sqlite3

    KeyStore(tmp_path / "keys.sqlite")
    AuditLog(tmp_path / "audit.sqlite")
    VerifyLimits(tmp_path / "limits.sqlite")._connection()
    WatchStore(tmp_path / "watch.sqlite")
    ObjectionStore(tmp_path / "watch.sqlite")
    out: dict[str, set[str]] = {}
    for name in ("keys", "audit", "limits", "watch"):
        con = sqlite3.connect(tmp_path / f"{name}.sqlite")
        for (table,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ):
            out[table] = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
    return out


def _columns_postgres(url: str) -> dict[str, set[str]]:
    import psycopg

    out: dict[str, set[str]] = {}
    with psycopg.connect(url) as con:
        for table, column in con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name <> 'alembic_version'"
        ):
            out.setdefault(table, set()).add(column)
    return out


def test_both_backends_hold_the_same_tables_and_columns(tmp_path, pg_url):
    sqlite_tables = _columns_sqlite(tmp_path)
    assert len(sqlite_tables) == 19  # keys 2, audit 2, limits 8, watch 6 and objections
    assert _columns_postgres(pg_url) == sqlite_tables


def test_a_database_without_the_codes_schema_is_refused_until_upgraded(postgres_server, tmp_path):
    url = postgres_server.new_database(upgraded=False)
    try:
        with pytest.raises(SchemaNotCurrent, match="credref db upgrade"):
            KeyStore(Postgres.shared(url))
        env = {**os.environ, "CREDREF_HOME": str(tmp_path), "CREDREF_DATABASE_URL": url}
        cli = [sys.executable, "-m", "credref", "db"]
        current = subprocess.run([*cli, "current"], env=env, capture_output=True, text=True)
        assert current.returncode == 1 and "no schema" in current.stdout
        done = subprocess.run([*cli, "upgrade"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "from nothing to revision 0002" in done.stdout
        again = subprocess.run([*cli, "upgrade"], env=env, capture_output=True, text=True)
        assert "already at revision 0002" in again.stdout
        Postgres._shared.pop(url)  # a new process: it checks the schema again
        KeyStore(Postgres.shared(url)).create("alipay", ["score"])
    finally:
        postgres_server.drop(url)


def test_without_a_database_the_db_command_says_so_in_one_line(tmp_path):
    env = {**os.environ, "CREDREF_HOME": str(tmp_path)}
    env.pop("CREDREF_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "credref", "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "CREDREF_DATABASE_URL is not set" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unreachable_database_fails_closed_without_its_password():
    from tests.conftest import _free_port

    url = f"postgresql://credref:s3cret-pw@127.0.0.1:{_free_port()}/nowhere"
    db = Postgres(url, wait_s=0.3)
    db._checked = True  # past the start-up check: the server went away later
    with pytest.raises(AuditUnavailable) as audit:
        AuditLog(db, timeout_s=0.5).append(
            AuditRecord(request_id="r", endpoint="/v1/score", outcome={"http": 200})
        )
    with pytest.raises(LimitsUnavailable) as limits:
        VerifyLimits(db, timeout_s=0.5).matched_since("alipay", [CODE], 30)
    keys = KeyStore(db)
    with pytest.raises(keys.place.errors) as lookup:  # the gate answers 503 keys_unavailable
        keys.authenticate("crk_0123456789ab_" + "x" * 43)
    for e in (audit.value, limits.value, lookup.value):
        assert "s3cret-pw" not in str(e)
    db.close()


def test_workers_on_two_hosts_together_allow_no_more_guesses_than_one(pg_url):
    policy = LimitPolicy()
    clock = lambda: 1_800_000_000.0  # noqa: E731 - one instant for every worker
    # sixteen workers, eight per host: each its own connection, as a worker process has
    workers = [VerifyLimits(Postgres(pg_url), clock=clock) for _ in range(16)]
    asker = Asker(platform="alipay", key_id="k1", key_households=10**6, platform_households=10**6)
    refused, judged = [], []
    lock = threading.Lock()
    start = threading.Barrier(len(workers))

    def guess(worker: VerifyLimits) -> None:
        ask = Ask(asker, CODE, ("operator_name",))
        start.wait()
        try:
            worker.verify(ask, lambda: judged.append(1) or {"operator_name": False})
        except LimitReached:
            with lock:
                refused.append(1)

    threads = [threading.Thread(target=guess, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        w.close()
        w.place.db.close()
    assert len(judged) == policy.pair_daily  # the same daily number as on one host
    assert len(refused) == 16 - policy.pair_daily


def test_a_key_revoked_through_one_host_is_refused_by_the_other_at_once(pg_url):
    host_a, host_b = KeyStore(Postgres(pg_url)), KeyStore(Postgres(pg_url))
    key, secret = host_a.create("alipay", ["score"])
    assert host_b.authenticate(secret) is not None
    host_a.revoke(key.key_id)
    assert host_b.authenticate(secret) is None


def test_a_watch_made_on_one_host_is_read_on_the_other(pg_url):
    host_a, host_b = WatchStore(Postgres(pg_url)), WatchStore(Postgres(pg_url))
    today = date(2026, 9, 30)
    done = host_a.watch("alipay", "k1", [CODE], today, (10, 10))
    assert done == {CODE: "2027-11-04"}
    assert host_b.watching("alipay", [CODE], today) == {CODE}
    assert host_b.watching("wechat", [CODE], today) == set()  # never another platform's
    host_b.record([("alipay", CODE, "status_changed", "2026-10-01", "{}")], {}, "p1", today)
    page = host_a.page("alipay", 0, 10)
    assert [e[:3] for e in page.events] == [(1, CODE, "status_changed")]


def test_every_host_derives_the_days_events_and_the_feed_tells_them_once(pg_url):
    """Each host publishes the day on its own copy (its publication has its own name) and
    runs the event step against the shared watch lists: the first records the day's
    events, every other host finds the answers already recorded and adds none."""
    from datetime import timedelta

    from serving.events import answer_table, derive
    from serving.watch import Answer

    host_a, host_b = WatchStore(Postgres(pg_url)), WatchStore(Postgres(pg_url))
    day = date(2026, 9, 30)
    host_a.watch("alipay", "k1", [CODE], day, (10, 10))
    before = {CODE: Answer("operating", "B", 0, 0, 0, 0, "1")}
    after = {CODE: Answer("operating", "D", 1, 0, 0, 0, "1")}  # marked abnormal: B -> D

    def read(answers):
        return lambda codes: (answer_table(answers), lambda found: None)

    derive(host_a, day, "2026-09-30-hostA|1", "1", read(before))  # the first answer: baseline
    nxt = day + timedelta(days=1)
    first = derive(host_a, nxt, "2026-10-01-hostA|1", "1", read(after))
    second = derive(host_b, nxt, "2026-10-01-hostB|1", "1", read(after))
    assert first.events == 2 and second.events == 0  # abnormal_marked, class_changed; then none
    kinds = [e[2] for e in host_b.page("alipay", 0, 10).events]
    assert sorted(kinds) == ["abnormal_marked", "class_changed"]


def test_two_hosts_deriving_the_same_day_at_once_tell_each_event_once(pg_url):
    from serving.events import answer_table, derive
    from serving.watch import Answer

    host_a, host_b = WatchStore(Postgres(pg_url)), WatchStore(Postgres(pg_url))
    day, nxt = date(2026, 9, 30), date(2026, 10, 1)
    host_a.watch("alipay", "k1", [CODE], day, (10, 10))
    before = {CODE: Answer("operating", "B", 0, 0, 0, 0, "1")}
    after = {CODE: Answer("operating", "D", 1, 0, 0, 0, "1")}

    def read(answers):
        return lambda codes: (answer_table(answers), lambda found: None)

    derive(host_a, day, "2026-09-30-hostA|1", "1", read(before))
    reports = {}

    def host_b_step() -> None:
        reports["b"] = derive(host_b, nxt, "2026-10-01-hostB|1", "1", read(after))

    other = threading.Thread(target=host_b_step)

    def host_a_reads(codes):
        # host b starts its step while host a is in the middle of its own ...
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive()  # ... and waits for it, rather than read the old answers
        return answer_table(after), lambda found: None

    reports["a"] = derive(host_a, nxt, "2026-10-01-hostA|1", "1", host_a_reads)
    other.join()
    assert (reports["a"].events, reports["b"].events) == (2, 0)
    assert len(host_a.page("alipay", 0, 10).events) == 2
