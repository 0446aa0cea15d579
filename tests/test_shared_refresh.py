"""The day's difference computed once by the refresh host and applied by every serving
host (``credref refresh --share`` / ``--changes``): the hosts publish the same
publication, hold the same rows, need no warehouse, and refuse a difference that does
not start from their publication or that leaves them with other counts."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from online_store.changes import MANIFEST, StaleChanges
from online_store.reader import CURRENT, IDENTITY_HASHES, LEDGER
from online_store.refresh import Recomputation, RefreshTask, refresh
from records.changeset import read_changeset
from records.ingest import ingest
from tests.helpers import SECRET, store_rows

pytestmark = pytest.mark.slow


def _meta(online: Path) -> dict:
    con = sqlite3.connect(online / os.readlink(online / CURRENT))
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()


@pytest.fixture()
def hosts(living_domain, tmp_path):
    """The refresh host (warehouse, publication of the day before the feed) and two
    serving hosts holding copies of its publication, and the feed's first days."""
    wh, online = tmp_path / "refresh" / "wh.duckdb", tmp_path / "refresh" / "online"
    ingest(living_domain, wh, progress=False)
    days = sorted((living_domain / "feed").iterdir())[:3]
    first = read_changeset(days[0]).day
    refresh(RefreshTask(wh, None, online, SECRET, as_of=first - timedelta(days=1)))
    serving = [tmp_path / name / "online" for name in ("a", "b")]
    for copy in serving:
        shutil.copytree(online, copy, symlinks=True)
    feed = tmp_path / "feed"
    feed.mkdir()
    return wh, online, serving, feed, days


def _refresh_host_day(wh: Path, online: Path, feed: Path, day: Path, shared: Path):
    (feed / day.name).symlink_to(day)
    how = Recomputation(share=shared)  # the day's folder: shared/YYYY-MM-DD
    return refresh(RefreshTask(wh, feed, online, SECRET, how=how))


def _serve_day(online: Path, folder: Path, tmp_path: Path):
    """A serving host's refresh: no warehouse (the path does not exist), no feed."""
    nowhere = tmp_path / "no-warehouse.duckdb"
    report = refresh(RefreshTask(nowhere, None, online, SECRET, how=Recomputation(changes=folder)))
    assert not nowhere.exists()
    return report


def test_every_serving_host_publishes_the_refresh_hosts_publication(hosts, tmp_path):
    wh, online, (a, b), feed, days = hosts
    shared = tmp_path / "shared"
    for day in days:
        made = _refresh_host_day(wh, online, feed, day, shared)
        assert made.kind == "incremental" and made.shared == shared / day.name
        assert made.rewritten > 0
        for host in (a, b):
            got = _serve_day(host, shared / day.name, tmp_path)
            assert (got.publication, got.as_of) == (made.publication, made.as_of)
            assert (got.rewritten, got.added, got.removed) == (
                made.rewritten,
                made.added,
                made.removed,
            )
            assert got.recomputed == 0
            assert store_rows(host) == store_rows(online)
            assert _meta(host) == _meta(online)
    # the same ledger line on every host: an answer audited on one replays on any
    ledgers = [(root / LEDGER).read_text().splitlines() for root in (online, a, b)]
    assert ledgers[0] == ledgers[1] == ledgers[2] and len(ledgers[0]) == len(days) + 1


def test_the_shared_folder_holds_only_what_the_store_holds(hosts, tmp_path):
    wh, online, _, feed, days = hosts
    folder = _refresh_host_day(wh, online, feed, days[0], tmp_path / "shared").shared
    table = pq.read_table(folder / "rows")
    personal = {"name", "operator_name", "operator_id_hmac", "address"}
    assert not personal & set(table.column_names)
    assert set(IDENTITY_HASHES) <= set(table.column_names)
    # the hashes are the store's own, keyed with the secret: nothing else travels
    stored = {r[0]: r[2:6] for r in store_rows(online)}
    for row in table.select(["uscc", "removed", *IDENTITY_HASHES]).to_pylist():
        if not row["removed"]:
            assert tuple(row[h] for h in IDENTITY_HASHES) == stored[row["uscc"]]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["publication"]["publication"] == _meta(online)["publication"]


def test_a_host_that_missed_a_day_refuses_the_next_and_catches_up_in_order(hosts, tmp_path):
    wh, online, (a, _), feed, days = hosts
    shared = tmp_path / "shared"
    for day in days[:2]:
        _refresh_host_day(wh, online, feed, day, shared)
    before = _meta(a)
    with pytest.raises(StaleChanges, match="the current publication is"):
        _serve_day(a, shared / days[1].name, tmp_path)
    assert _meta(a) == before  # nothing published
    for day in days[:2]:
        _serve_day(a, shared / day.name, tmp_path)
    assert store_rows(a) == store_rows(online) and _meta(a) == _meta(online)


def test_a_host_whose_copy_drifted_refuses_the_difference_and_keeps_its_publication(
    hosts, tmp_path
):
    wh, online, (a, _), feed, days = hosts
    folder = _refresh_host_day(wh, online, feed, days[0], tmp_path / "shared").shared
    con = sqlite3.connect(a / os.readlink(a / CURRENT))
    con.execute("DELETE FROM subjects WHERE uscc = (SELECT min(uscc) FROM subjects)")
    con.commit()
    con.close()
    drifted, meta = store_rows(a), _meta(a)
    with pytest.raises(StaleChanges, match="copy the refresh host's publication"):
        _serve_day(a, folder, tmp_path)
    assert store_rows(a) == drifted and _meta(a) == meta  # rolled back whole


def test_a_serving_hosts_timer_applies_every_day_it_missed_in_order(hosts, tmp_path):
    wh, online, (a, _), feed, days = hosts
    shared = tmp_path / "shared"
    for day in days:
        _refresh_host_day(wh, online, feed, day, shared)
    caught = _serve_day(a, shared, tmp_path)  # the folder of days, as the timer gives it
    assert caught.caught_up == [read_changeset(d).day for d in days]
    assert store_rows(a) == store_rows(online) and _meta(a) == _meta(online)
    again = _serve_day(a, shared, tmp_path)
    assert again.kind == "unchanged" and again.publication == _meta(online)["publication"]
    # a host whose publication is its own, not the refresh host's: no day continues it
    own = tmp_path / "c" / "online"
    first = read_changeset(days[0]).day
    refresh(RefreshTask(wh, None, own, SECRET, as_of=first - timedelta(days=1)))
    with pytest.raises(StaleChanges, match="copy the refresh host's publication"):
        _serve_day(own, shared, tmp_path)


def test_the_commands_share_on_the_refresh_host_and_apply_on_a_serving_host(hosts, tmp_path):
    """``credref refresh --share`` and ``credref refresh --changes``, as the timers run them."""
    from typer.testing import CliRunner

    from credref.cli.app import app

    wh, online, (a, _), feed, days = hosts
    (feed / days[0].name).symlink_to(days[0])
    shared = tmp_path / "shared"
    secret = {"CREDREF_ID_HASH_SECRET": SECRET.decode()}
    refresh_host = {
        "CREDREF_HOME": str(tmp_path / "refresh"),
        "CREDREF_WAREHOUSE": str(wh),
        "CREDREF_ONLINE_DIR": str(online),
        **secret,
    }
    made = CliRunner().invoke(
        app, ["refresh", "--feed", str(feed), "--share", str(shared)], env=refresh_host
    )
    assert made.exit_code == 0, made.output
    assert f"{shared / days[0].name}, for the serving hosts" in made.output.replace("\n", "")
    serving = {"CREDREF_HOME": str(a.parent), "CREDREF_ONLINE_DIR": str(a), **secret}
    got = CliRunner().invoke(app, ["refresh", "--changes", str(shared)], env=serving)
    assert got.exit_code == 0, got.output
    assert f"applied, in order: {days[0].name}" in got.output
    assert _meta(a) == _meta(online) and store_rows(a) == store_rows(online)
    again = CliRunner().invoke(app, ["refresh", "--changes", str(shared)], env=serving)
    assert again.exit_code == 0 and "nothing to apply" in again.output
    # the day's folder named again: refused, it does not start from this host's publication
    day = CliRunner().invoke(app, ["refresh", "--changes", str(shared / days[0].name)], env=serving)
    assert day.exit_code == 2 and "nothing was published" in day.output
    assert not (a.parent / "warehouse.duckdb").exists()
