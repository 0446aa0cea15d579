"""A month of the generator's feed with three platforms watching: after each daily refresh
the event step runs, and the events each platform can read equal an independent
comparison of consecutive daily publications for the households it watched that day."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from features.catalogue import FEATURE_NAMES
from online_store.reader import OnlineStore
from online_store.refresh import RefreshTask, refresh
from records.changeset import read_changeset
from serving.events import baseline, derive_events
from serving.watch import WatchStore
from tests.helpers import SECRET
from tests.test_events import expected_kinds
from tests.test_refresh import _champion, _start

pytestmark = pytest.mark.slow
DAYS = 30
VERSION = "1"


def _answers(frame: pd.DataFrame, model) -> dict:
    """Each household's answer, computed here from the publication's rows."""
    from serving.watch import Answer

    f = frame.set_index("uscc")
    op = f[(f.status == "operating") & f.penalties_3y.notna()]
    classes = model.score_frame(op[list(FEATURE_NAMES)], with_reasons=False)["risk_class"]
    out = {c: Answer(s, None, None, None, None, None, VERSION) for c, s in f.status.items()}
    for c, row in op.iterrows():
        abnormal = int(row.abnormal_now_report > 0 or row.abnormal_now_unreachable > 0)
        out[c] = Answer(
            "operating",
            classes[c],
            abnormal,
            int(row.serious_listed > 0),
            int(row.penalties_3y),
            int(row.penalty_max_severity),
            VERSION,
        )
    return out


def _touched(days) -> list[str]:
    """Households the feed's change sets name: the ones with something to tell."""
    import pyarrow.parquet as pq

    codes: set[str] = set()
    for d in days:
        for name, path in read_changeset(d).rows.items():
            table = pq.read_table(path)
            if "uscc" in table.column_names and name != "households":
                codes |= set(table.column("uscc").to_pylist())
    return sorted(codes)


def test_a_month_of_events_equals_an_independent_diff_of_the_daily_publications(
    living_domain, tmp_path, service_home, monkeypatch
):
    """The event step reads the watched households from the Parquet mirror here (as it
    does at scale); the expected answers come from the SQLite store's rows."""
    import serving.events

    monkeypatch.setattr(serving.events, "MIRROR_FROM", 0)
    wh, online, days = _start(living_domain, tmp_path)
    days = days[:DAYS]
    model = _champion(service_home)
    store = WatchStore(tmp_path / "watch.sqlite")
    touched = _touched(days)
    with OnlineStore(online).current() as snap:
        present = set(snap.frame(touched).uscc)
    touched = [c for c in touched if c in present]
    assert len(touched) >= 60
    plan = {  # platform -> (codes, watched from day i, unwatched from day j)
        "alipay": (touched[::2], 0, None),
        "wechat": (touched[::3], 0, 20),
        "douyin": (touched[1::4], 10, None),
    }
    feed = tmp_path / "feed"
    feed.mkdir()
    watched: set[tuple[str, str]] = set()
    last: dict = {}
    expected: dict[str, list] = {p: [] for p in plan}
    for i, d in enumerate(days):
        day = read_changeset(d).day
        for p, (codes, start, stop) in plan.items():  # before the day's refresh
            if i == start:  # first answers from the publication current when watched
                store.watch(p, f"key-{p}", codes, day, (10**6, 10**6))
                with OnlineStore(online).current() as snap:
                    baseline(store, snap, codes, model, VERSION)
                    then = _answers(snap.frame(), model)
                last.update({c: then[c] for c in codes if c not in last})
                watched |= {(p, c) for c in codes}
            if i == stop:
                store.unwatch(p, codes)
                watched -= {(p, c) for c in codes}
        (feed / d.name).symlink_to(d)
        report = refresh(RefreshTask(wh, feed, online, SECRET))
        assert report.as_of == day
        with OnlineStore(online).current() as snap:
            derive_events(store, snap, model, VERSION)
            now = _answers(snap.frame(), model)
            sample = sorted(now)[::7]
            fast = serving.events.watched_frame(snap, sample)
            pd.testing.assert_frame_equal(
                fast.sort_values("uscc", ignore_index=True), snap.frame(sample), check_dtype=False
            )
        for p, c in sorted(watched):
            if c in last:
                expected[p] += [(day.isoformat(), c, k) for k in expected_kinds(last[c], now[c])]
        last = {c: now[c] for _, c in watched}
    got = {}
    for p in plan:
        page = store.page(p, 0, 10**6)
        got[p] = [(json.loads(b)["publication"], c, k) for _, c, k, b in page.events]
        assert sorted(got[p]) == sorted(expected[p]), p
        assert {c for _, c, _ in got[p]} <= set(plan[p][0])  # only its own households
    kinds = {k for p in got for _, _, k in got[p]}
    assert {"class_changed", "penalty_in_publicity", "abnormal_marked"} <= kinds, kinds
    # wechat stopped before day 20: nothing from then; douyin started on day 10: nothing before
    day = [read_changeset(d).day.isoformat() for d in days]
    assert got["wechat"] and not [e for e in got["wechat"] if e[0] >= day[20]]
    assert got["douyin"] and not [e for e in got["douyin"] if e[0] < day[10]]
