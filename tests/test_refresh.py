"""``credref refresh``: the online store brought to each day in place, equal every day to a
full publication of that day, served by a live server across refreshes, and whole when a
refresh is killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest

from online_store.publish import publish
from online_store.reader import CURRENT, OnlineStore
from online_store.refresh import RefreshRefused, RefreshTask, refresh
from records.changeset import read_changeset
from records.ingest import ingest
from records.warehouse import connect
from serving.keys import KeyStore
from tests.helpers import SECRET, relate, start_server, stop_server, store_rows, wait_ready

pytestmark = pytest.mark.slow


def _start(living_domain: Path, tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A warehouse on the living base, published the day before its first change set."""
    wh, online = tmp_path / "wh.duckdb", tmp_path / "online"
    ingest(living_domain, wh, progress=False)
    days = sorted((living_domain / "feed").iterdir())
    refresh(
        RefreshTask(wh, None, online, SECRET, as_of=read_changeset(days[0]).day - timedelta(days=1))
    )
    return wh, online, days


def _frame(online: Path):
    with OnlineStore(online).current() as snap:
        return snap.frame()


def _full(wh: Path, as_of: date, root: Path) -> Path:
    con = connect(wh, read_only=True)
    try:
        publish(con, as_of, root, SECRET)
    finally:
        con.close()
    return root


def test_refresh_applies_new_change_sets_and_publishes_their_day(living_domain, tmp_path):
    wh, online, days = _start(living_domain, tmp_path)
    first = _frame(online)
    feed = tmp_path / "feed"
    feed.mkdir()
    for d in days[:3]:
        (feed / d.name).symlink_to(d)
    second = refresh(RefreshTask(wh, feed, online, SECRET))
    assert second.applied == [read_changeset(d).day for d in days[:3]]
    assert second.kind == "incremental" and second.as_of == second.applied[-1]
    assert 0 < second.rewritten < second.households and second.added > 0
    assert second.records_learnt > 0 and sum(second.changed_by_reason.values()) > 0
    ahead = second.as_of + timedelta(days=1)
    with pytest.raises(RefreshRefused, match="ahead of the last change set"):
        refresh(RefreshTask(wh, feed, online, SECRET, as_of=ahead))
    with pytest.raises(RefreshRefused, match="before the current publication"):
        refresh(RefreshTask(wh, feed, online, SECRET, as_of=second.as_of - timedelta(days=10)))
    calendar = refresh(RefreshTask(wh, feed, online, SECRET, as_of=ahead, force=True))
    assert calendar.applied == [] and calendar.as_of == ahead and calendar.records_learnt == 0
    assert calendar.rewritten < calendar.households // 10  # the calendar alone rewrites few
    assert calendar.rewritten <= calendar.recomputed < calendar.households // 4  # looks at few
    # ... yet every household's registration age moved with it (derived from its anchor)
    now = _frame(online).set_index("uscc")
    then = first.set_index("uscc").reindex(now.index)
    aged = (now.reg_age_years - then.reg_age_years).dropna().round(9)
    assert len(aged) > 0 and (aged == round(4 / 365.25, 9)).all()


def test_sixty_daily_refreshes_each_equal_a_full_publication_and_a_live_server_follows(
    living_domain, tmp_path, service_home
):
    """Every day of the feed, in process for every household: the refreshed store's rows
    (hashes, status, features, anchors) equal a full publication of that day; over the
    feed, households registered, revoked, repaired, restored and whose publicity ended
    were among them. A live server answers every tenth day as the full publication does."""
    from features.catalogue import FEATURE_NAMES
    from tests.conftest import FEED_DAYS

    wh, online, days = _start(living_domain, tmp_path)
    assert len(days) == FEED_DAYS >= 60  # and one day more of our own
    feed = tmp_path / "feed"
    feed.mkdir()
    log = tmp_path / "server.log"
    proc, url = start_server(
        service_home,
        log,
        workers=1,
        CREDREF_ONLINE_DIR=str(online),
        CREDREF_MAX_SNAPSHOT_AGE_DAYS="off",
    )
    try:
        wait_ready(url, proc, log)
        key = KeyStore(service_home / "keys.sqlite").create("refresh-test", ["score"])[1]
        model = _champion(service_home)
        rewritten = []
        for i, d in enumerate([*days, None]):
            if d is None:  # a last day of our own: the feed's 4,000 rarely see a revocation
                d = _revocation(wh, read_changeset(days[-1]).day + timedelta(days=1), tmp_path)
            (feed / d.name).symlink_to(d)
            mirrored = i % 7 != 3
            if not mirrored:  # now and then without the mirror: from the history instead
                for mirror in online.glob("rows-*.parquet"):
                    mirror.unlink()
            report = refresh(RefreshTask(wh, feed, online, SECRET))
            assert report.kind == "incremental", report.why_full
            # with the mirror, only the candidates are recomputed; without, everyone
            assert (report.recomputed < report.households // 4) == mirrored, report
            assert report.recomputed >= report.rewritten
            rewritten.append(report.rewritten)
            full = _full(wh, report.as_of, tmp_path / f"full-{i % 2}")
            assert store_rows(online) == store_rows(full), report.as_of
            if i % 10 == 9 or i == len(days):  # what is read from equal rows: equal
                served, expected = _frame(online), _frame(full)
                assert served.equals(expected), report.as_of
                relate(service_home, "refresh-test", list(expected.uscc))
                _same_answers(url, key, expected, report.as_of, model)
        assert report.status_changed == 1 and (served.status == "revoked").sum() > 0
    finally:
        stop_server(proc)
    assert sum(rewritten) < len(days) * len(served) // 20  # a few households a day
    assert served[list(FEATURE_NAMES)].notna().any().all()
    _the_feed_covered_every_kind_of_day(wh, days)
    size = sum(p.stat().st_size for p in online.glob("snap-*"))
    assert size < 2 * (full / os.readlink(full / CURRENT)).stat().st_size


@pytest.mark.parametrize(
    ("start", "end", "everyone"),
    [
        (date(2026, 6, 25), date(2026, 7, 2), True),  # 30 June: the reporting year turns
        (date(2026, 5, 10), date(2026, 6, 12), False),  # a month inside one half-year
    ],
)
def test_a_calendar_refresh_equals_a_full_publication_and_recomputes_only_what_it_must(
    living_domain, tmp_path, start, end, everyone
):
    wh, online = tmp_path / "wh.duckdb", tmp_path / "online"
    ingest(living_domain, wh, progress=False)
    refresh(RefreshTask(wh, None, online, SECRET, as_of=start))
    report = refresh(RefreshTask(wh, None, online, SECRET, as_of=end, force=True))
    assert report.kind == "incremental" and report.as_of == end
    assert (report.recomputed == report.households) == everyone, report
    assert report.rewritten > 0
    assert store_rows(online) == store_rows(_full(wh, end, tmp_path / "full"))


def _revocation(wh: Path, day: date, tmp_path: Path) -> Path:
    """A change set of ``day`` revoking one household operating now."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from records.changeset import write_changeset

    con = duckdb.connect(str(wh), read_only=True)
    try:
        row = con.sql(
            "SELECT * EXCLUDE (known_from) FROM households WHERE status = 'operating' "
            "ORDER BY uscc LIMIT 1"
        ).to_arrow_table()
    finally:
        con.close()
    for name, value in (("status", "revoked"), ("status_changed_on", day)):
        i = row.schema.get_field_index(name)
        row = row.set_column(i, name, pa.array([value], row.schema.field(name).type))
    i = row.schema.get_field_index("status_reason")
    row = row.set_column(i, "status_reason", pc.cast(pa.array(["licence_revoked"]), pa.string()))
    change = pa.table(
        {
            "uscc": row.column("uscc"),
            "change_type": ["status"],
            "changed_on": pa.array([day], pa.date32()),
            "new_status": ["revoked"],
            "reason": ["licence_revoked"],
        }
    )
    folder = tmp_path / "own-feed" / day.isoformat()
    return write_changeset(folder, day, {"households": row, "registration_changes": change})


def _champion(home: Path):
    import mlflow

    from training.registry import load_version

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    return load_version("credref-reference", "1").unwrap_python_model().model


def _same_answers(url: str, key: str, expected, as_of: date, model) -> None:
    """A sample scored by the live server equals the full publication's answers."""
    operating = expected[expected.status == "operating"].set_index("uscc").head(40)
    want = model.score_frame(operating.drop(columns="status"))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        for uscc, row in want.iterrows():
            r = c.post("/v1/score", json={"uscc": uscc, "purpose": "onboarding"})
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["as_of"] == as_of.isoformat()
            assert (got["score"], got["risk_class"]) == (row["score"], row["risk_class"])
            assert ";".join(x["code"] for x in got["reasons"]) == row["reasons"]


def _the_feed_covered_every_kind_of_day(wh: Path, days: list[Path]) -> None:
    """Over the feed's days: registrations, revocations, repaired penalties, restored
    markings and publicity ends among operating households all happened."""
    first, last = read_changeset(days[0]).day, read_changeset(days[-1]).day
    con = duckdb.connect(str(wh), read_only=True)
    try:
        counts = con.execute(
            """
            SELECT
              (SELECT count(*) FROM households WHERE registered_on BETWEEN $1 AND $2),
              (SELECT count(*) FROM registration_changes WHERE change_type = 'status'
                 AND new_status = 'revoked' AND changed_on BETWEEN $1 AND $2 + 1),
              (SELECT count(*) FROM penalties WHERE repaired_on BETWEEN $1 AND $2),
              (SELECT count(*) FROM abnormal_status WHERE restored_on BETWEEN $1 AND $2),
              (SELECT count(*) FROM penalties WHERE publicity_end + 1 BETWEEN $1 AND $2
                 AND repaired_on IS NULL AND withdrawn_on IS NULL)
            """,
            [first, last],
        ).fetchone()
    finally:
        con.close()
    kinds = ("registered", "revoked", "repaired", "restored", "publicity ended")
    assert all(n > 0 for n in counts), dict(zip(kinds, counts, strict=True))


# --- a refresh killed midway -------------------------------------------------------------

#: A refresh in a child process, where one step first does its work, then says so
#: (touches argv[1]) and never returns: the test kills it in that state.
_CHILD = """
import sys, threading
from pathlib import Path
import {module} as target

real = target.{name}

def _reached():
    Path(sys.argv[1]).touch()
    threading.Event().wait()

def {name}(*args, **kwargs):
    out = real(*args, **kwargs)
    {block}

target.{name} = {name}
from online_store.refresh import RefreshTask, refresh
refresh(RefreshTask(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), b"test-secret"))
"""
_STAGES = {
    # inside the ingest transaction, one table of the change set merged
    "ingest": ("records.merge", "merge", "_reached()"),
    # the day's rows recomputed in DuckDB and written to a temporary file, not to the store
    "recomputation": ("online_store.incremental", "write_mirror", "_reached()"),
    # inside the store's write transaction, the first rows inserted, not committed
    "publication": ("online_store.incremental", "rows_of", "yield from out; _reached()"),
}


@pytest.mark.parametrize("stage", list(_STAGES))
def test_a_refresh_killed_midway_leaves_the_previous_publication_and_a_rerun_completes(
    living_domain, tmp_path, stage
):
    wh, online, days = _start(living_domain, tmp_path)
    feed = tmp_path / "feed"
    feed.mkdir()
    for d in days[:2]:
        (feed / d.name).symlink_to(d)
    with OnlineStore(online).current() as snap:
        before, uscc = snap.name, snap.frame().uscc.iloc[0]
    rows_before = store_rows(online)
    module, name, block = _STAGES[stage]
    code = _CHILD.format(module=module, name=name, block=block)
    reached = tmp_path / "reached"
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(reached), str(wh), str(feed), str(online)],
        cwd=Path(__file__).parents[1],
    )
    try:
        deadline = time.monotonic() + 120
        while not reached.exists():  # a state to wait on: the child says it is there
            assert child.poll() is None, "the refresh ended before the fault"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with OnlineStore(online).current() as snap:  # readers are not blocked meanwhile
            assert snap.name == before and snap.get(uscc) is not None
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with OnlineStore(online).current() as snap:
        assert snap.name == before
    assert store_rows(online) == rows_before  # the previous publication, whole
    report = refresh(RefreshTask(wh, feed, online, SECRET))  # the rerun completes
    assert report.kind == "incremental" and report.as_of == read_changeset(days[1]).day
    assert store_rows(online) == store_rows(_full(wh, report.as_of, tmp_path / "full"))


def test_a_quiet_day_with_no_row_to_rewrite_moves_the_publication_on(living_domain, tmp_path):
    """A day whose recomputed candidates all equal their published rows (an empty
    difference) is still published: no filter on an empty list may fail it."""
    from online_store.incremental import DuckDBRecompute, Step, refresh_in_place

    wh, online = tmp_path / "wh.duckdb", tmp_path / "online"
    ingest(living_domain, wh, progress=False)
    first = refresh(RefreshTask(wh, None, online, SECRET, as_of=date(2026, 5, 10)))
    quiet = first.as_of + timedelta(days=1)
    con = connect(wh, read_only=True)
    try:
        store = sqlite3.connect(online / CURRENT)
        meta = dict(store.execute("SELECT key, value FROM meta").fetchall())
        store.close()

        def nothing_differs(query):  # the real recomputation, its difference emptied
            step = Step.from_meta(meta, quiet)
            real = DuckDBRecompute(con, online, step, tmp_path / "rows.parquet")
            return real(query).slice(0, 0)

        report = refresh_in_place(con, quiet, online, SECRET, recompute=nothing_differs)
    finally:
        con.close()
    assert report.rewritten == 0
    with OnlineStore(online).current() as snap:
        assert snap.as_of == quiet.isoformat()
