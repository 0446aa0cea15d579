"""The staleness guard: past CREDREF_MAX_SNAPSHOT_AGE_DAYS the service is not ready and
refuses to score or verify (audited), so a stopped refresh never becomes silent use of
records repaired since; the domain's clock is CREDREF_TODAY, never the test's calendar."""

from __future__ import annotations

import importlib
import json
import os
import sqlite3
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from serving.keys import KeyStore
from tests.helpers import SERVICE_AS_OF, service_env


@pytest.fixture()
def serve(service_home):
    """A service on the served test home with extra settings; yields (client, key)."""
    saved = dict(os.environ)
    clients = []

    def start(**extra: str):
        os.environ.update(service_env(service_home, **extra))
        import serving.service

        service = importlib.reload(serving.service)
        client = TestClient(service.ReferenceService.to_asgi())
        client.__enter__()
        clients.append(client)
        key = KeyStore(service_home / "keys.sqlite").create(
            "stale-test", ["verify", "score", "batch"]
        )
        return client, key[1]

    yield start
    for c in clients:
        c.__exit__(None, None, None)
    os.environ.clear()
    os.environ.update(saved)


def _operating(home) -> str:
    snap = sqlite3.connect(f"file:{home / 'online' / 'current'}?mode=ro", uri=True)
    return snap.execute("SELECT uscc FROM subjects WHERE status = 'operating' LIMIT 1").fetchone()[
        0
    ]


def _last_audit(home) -> dict:
    con = sqlite3.connect(home / "audit.sqlite")
    con.row_factory = sqlite3.Row
    row = dict(con.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT 1").fetchone())
    return {**row, "outcome": json.loads(row["outcome"])}


def _day(days: int) -> str:
    return (SERVICE_AS_OF + timedelta(days=days)).isoformat()


def test_past_the_allowed_age_nothing_is_answered_and_the_refusal_is_audited(serve, service_home):
    client, key = serve(CREDREF_TODAY=_day(3))
    auth = {"Authorization": f"Bearer {key}"}
    uscc = _operating(service_home)
    assert client.get("/readyz").status_code == 503
    for path, body in (
        ("/v1/score", {"uscc": uscc, "purpose": "onboarding"}),
        ("/v1/verify", {"uscc": uscc, "purpose": "onboarding", "operator_name": "x"}),
        ("/v1/score_batch", {"usccs": [uscc], "purpose": "onboarding"}),
    ):
        r = client.post(path, json=body, headers=auth)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "snapshot_stale"
        row = _last_audit(service_home)
        assert row["endpoint"] == path and row["outcome"]["error"] == "snapshot_stale"


def test_within_the_allowed_age_answers_name_their_publication(serve, service_home):
    client, key = serve(CREDREF_TODAY=_day(2))
    assert client.get("/readyz").status_code == 200
    uscc = _operating(service_home)
    r = client.post(
        "/v1/score",
        json={"uscc": uscc, "purpose": "onboarding"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    current = os.readlink(service_home / "online" / "current")
    row = _last_audit(service_home)
    assert row["outcome"]["publication"] == current.removesuffix(".sqlite")
    assert row["model_version"] == "1"


def test_the_guard_can_be_turned_off(serve, service_home):
    client, key = serve(CREDREF_TODAY=_day(400), CREDREF_MAX_SNAPSHOT_AGE_DAYS="off")
    assert client.get("/readyz").status_code == 200
    r = client.post(
        "/v1/score",
        json={"uscc": _operating(service_home), "purpose": "onboarding"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200


# --- credref refresh: the publication date is the domain's today ------------------------


def test_refresh_applies_new_change_sets_and_publishes_their_day(living_domain, tmp_path):
    from datetime import date

    from features.changeset import read_changeset
    from features.ingest import ingest
    from serving.online import describe_current
    from serving.refresh import RefreshRefused, refresh
    from tests.helpers import SECRET

    wh, online, feed = tmp_path / "wh.duckdb", tmp_path / "online", tmp_path / "feed"
    ingest(living_domain, wh, progress=False)
    days = sorted((living_domain / "feed").iterdir())
    base_day = date.fromordinal(read_changeset(days[0]).day.toordinal() - 1)
    first = refresh(wh, None, online, SECRET, as_of=base_day)
    assert first.applied == [] and first.previous is None
    feed.mkdir()
    for d in days[:3]:
        (feed / d.name).symlink_to(d)
    second = refresh(wh, feed, online, SECRET)
    assert second.applied == [read_changeset(d).day for d in days[:3]]
    assert (
        second.as_of == second.applied[-1] == date.fromisoformat(describe_current(online)["as_of"])
    )
    assert second.previous == first.publication and second.added > 0
    assert sum(second.changed_by_feature.values()) > 0
    ahead = date.fromordinal(second.as_of.toordinal() + 1)
    with pytest.raises(RefreshRefused, match="ahead of the last change set"):
        refresh(wh, feed, online, SECRET, as_of=ahead)
    with pytest.raises(RefreshRefused, match="before the current publication"):
        refresh(wh, feed, online, SECRET, as_of=base_day)
    calendar = refresh(wh, feed, online, SECRET, as_of=ahead, force=True)
    assert calendar.applied == [] and calendar.as_of == ahead
    assert calendar.changed_by_feature.get("reg_age_years", 0) > 0  # the calendar moved ages


def test_daily_refreshes_publish_exactly_a_full_recomputation_of_their_day(
    living_domain, tmp_path, service_home
):
    """Every day of the feed: the published answer inputs (status, features) of every
    household equal a recomputation as of that day; the day's new, exited and repaired
    households are among them; a household registered that day is verified and scored."""
    from datetime import date

    import duckdb
    import pandas as pd

    from features.catalogue import FEATURE_NAMES
    from features.changeset import read_changeset
    from features.ingest import ingest
    from features.pit import feature_sql, status_sql
    from serving.online import CURRENT
    from serving.refresh import refresh
    from tests.helpers import SECRET

    wh, online = tmp_path / "wh.duckdb", tmp_path / "online"
    ingest(living_domain, wh, progress=False)
    days = sorted((living_domain / "feed").iterdir())
    refresh(
        wh,
        None,
        online,
        SECRET,
        as_of=date.fromordinal(read_changeset(days[0]).day.toordinal() - 1),
    )
    feed = tmp_path / "feed"
    feed.mkdir()
    seen = {"added": 0, "status_changed": 0}
    for d in days:
        (feed / d.name).symlink_to(d)
        report = refresh(wh, feed, online, SECRET)
        seen["added"] += report.added
        seen["status_changed"] += report.status_changed
        pub = sqlite3.connect(online / os.readlink(online / CURRENT))
        served = pd.read_sql(
            "SELECT uscc, status, " + ", ".join(FEATURE_NAMES) + " FROM subjects", pub
        )
        pub.close()
        con = duckdb.connect(str(wh), read_only=True)
        status = con.sql(status_sql(report.as_of)).df()[["uscc", "status_on"]]
        feats = con.sql(feature_sql(report.as_of)).df().drop(columns=["as_of"])
        con.close()
        expected = status.rename(columns={"status_on": "status"}).merge(
            feats, on="uscc", how="left"
        )
        a = served.sort_values("uscc").reset_index(drop=True)
        b = expected[a.columns].sort_values("uscc").reset_index(drop=True)
        assert len(a) == len(b) and (a.uscc == b.uscc).all(), report.as_of
        for c in a.columns[1:]:
            x, y = a[c], b[c]
            same = (x == y) | (x.isna() & y.isna())
            assert same.all(), f"{report.as_of} {c}: {int((~same).sum())} households differ"
    assert seen["added"] > 0 and seen["status_changed"] > 0

    # a household registered on the last day is found and scored after that day's refresh
    last = report.as_of
    con = duckdb.connect(str(wh), read_only=True)
    newest = con.execute(
        "SELECT uscc FROM households WHERE registered_on = ? AND status = 'operating' LIMIT 1",
        [last],
    ).fetchall()
    con.close()
    assert newest, "the feed registers households every day"
    saved = dict(os.environ)
    os.environ.update(
        service_env(service_home, CREDREF_ONLINE_DIR=str(online), CREDREF_TODAY=last.isoformat())
    )
    try:
        import serving.service

        service = importlib.reload(serving.service)
        key = KeyStore(service_home / "keys.sqlite").create("onboard-test", ["verify", "score"])[1]
        with TestClient(service.ReferenceService.to_asgi()) as client:
            auth = {"Authorization": f"Bearer {key}"}
            body = {"uscc": newest[0][0], "purpose": "onboarding"}
            v = client.post("/v1/verify", json={**body, "operator_name": "x"}, headers=auth)
            s = client.post("/v1/score", json=body, headers=auth)
        assert v.status_code == 200 and v.json()["found"] and v.json()["status"] == "operating"
        assert s.status_code == 200 and s.json()["as_of"] == last.isoformat()
    finally:
        os.environ.clear()
        os.environ.update(saved)
