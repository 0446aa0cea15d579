"""The change feed's properties (hypothesis), on a real watch store: a platform gets events
only for households it watches, exactly those an independent comparison of the daily
answers gives; any cursor, after a restart, gives the same events; expired and removed
watches stop them."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.events import answer_table, derive
from serving.watch import WATCH_DAYS, Answer, CursorExpired, Cursors, WatchStore

PLATFORMS = ("alipay", "wechat", "douyin")
CODES = tuple(f"9244030000000000{i:02d}" for i in range(6))
START = date(2026, 10, 1)
V1 = "1"

answer = st.builds(
    lambda op, status, cls, ab, se, pen, sev: (
        Answer("operating", cls, ab, se, pen, sev, V1)
        if op
        else Answer(status, None, None, None, None, None, V1)
    ),
    st.booleans(),
    st.sampled_from(("suspended", "revoked", "deregistered")),
    st.sampled_from("ABCD"),
    st.integers(0, 1),
    st.integers(0, 1),
    st.integers(0, 3),
    st.integers(0, 4),
)
day_plan = st.fixed_dictionaries(
    {
        "answers": st.dictionaries(st.sampled_from(CODES), answer, min_size=len(CODES)),
        "watch": st.sets(st.tuples(st.sampled_from(PLATFORMS), st.sampled_from(CODES))),
        "unwatch": st.sets(st.tuples(st.sampled_from(PLATFORMS), st.sampled_from(CODES))),
        "model": st.sampled_from(("1", "2")),  # a promotion now and then
    }
)


def _no(found) -> None:
    """No reasons to add (these answers come without features)."""


def expected_kinds(old: Answer, new: Answer) -> list[str]:
    """An independent statement of the event rules."""
    out = []
    if old.status != new.status:
        out.append("status_changed")
    both = old.status == new.status == "operating"
    if both and old.abnormal != new.abnormal:
        out.append("abnormal_marked" if new.abnormal else "abnormal_restored")
    if both and old.serious != new.serious:
        out.append("serious_listed" if new.serious else "serious_removed")
    if both and new.penalties > old.penalties:
        out.append("penalty_in_publicity")
    if both and old.risk_class != new.risk_class:
        new_model = old.model_version != new.model_version
        out.append("model_changed" if new_model else "class_changed")
    return out


def _run(store: WatchStore, plans: list[dict]) -> dict[str, list[tuple]]:
    """Each day: watch and unwatch as planned, then derive; returns what each platform
    should have been told, as (day, code, kind), by the independent rules. A household
    gets events from the day after someone first watches it, for everyone watching it."""
    watched: set[tuple[str, str]] = set()
    last: dict[str, Answer] = {}
    expected: dict[str, list[tuple]] = {p: [] for p in PLATFORMS}
    for i, plan in enumerate(plans):
        day = START + timedelta(days=i)
        for p, c in sorted(plan["watch"]):
            assert isinstance(store.watch(p, f"key-{p}", [c], day, (100, 100))[c], str)
        for p, c in sorted(plan["unwatch"]):
            store.unwatch(p, [c])
        watched = (watched | plan["watch"]) - plan["unwatch"]
        v = plan["model"]
        now = {c: a._replace(model_version=v) for c, a in plan["answers"].items()}
        for p, c in sorted(watched):
            if c in last:
                expected[p] += [(day.isoformat(), c, k) for k in expected_kinds(last[c], now[c])]
        derive(store, day, f"day-{i}|{v}", v, lambda codes, now=now: (answer_table(now), _no))
        last = {c: now[c] for _, c in watched}
    return expected


def _feed(store: WatchStore, cursors: Cursors, platform: str, after: str = "", limit: int = 2):
    """Every event after a cursor, page by page; with the cursor before each event."""
    out, before = [], []
    previous = cursors.decode(platform, after)
    while True:
        page = store.page(platform, cursors.decode(platform, after), limit)
        for event_id, code, kind, body in page.events:
            before.append(cursors.encode(platform, previous) if previous else "")
            out.append((json.loads(body)["publication"], code, kind))
            previous = event_id
        after = cursors.encode(platform, page.last_id)
        if not page.more:
            return out, before


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(plans=st.lists(day_plan, min_size=2, max_size=6))
def test_each_platform_gets_exactly_its_watched_households_events_from_any_cursor(
    plans, tmp_path_factory
):
    folder = tmp_path_factory.mktemp("feed")
    store, cursors = WatchStore(folder / "watch.sqlite"), Cursors(b"secret")
    expected = _run(store, plans)
    for platform in PLATFORMS:
        got, cursor_before = _feed(store, cursors, platform)
        # sorted within a day: the feed orders a day's events by code, then rule
        assert sorted(got) == sorted(expected[platform])
        assert [g[0] for g in got] == sorted(g[0] for g in got)  # days in order
        # a restart: a new store object on the same file, and every cursor resumes alike
        again = WatchStore(folder / "watch.sqlite")
        for i, cursor in enumerate(cursor_before):
            assert _feed(again, cursors, platform, cursor)[0] == got[i:]


def test_the_rules_ignore_a_first_answer_and_households_never_watched(tmp_path):
    store = WatchStore(tmp_path / "watch.sqlite")
    a = Answer("operating", "A", 0, 0, 0, 0, V1)
    store.watch("alipay", "k", [CODES[0]], START, (10, 10))
    derive(store, START, "d0", V1, lambda codes: (answer_table({c: a for c in codes}), _no))
    moved = a._replace(risk_class="D", abnormal=1)
    derive(
        store,
        START + timedelta(days=1),
        "d1",
        V1,
        lambda codes: (answer_table({c: moved for c in [*codes, CODES[1]]}), _no),
    )
    page = store.page("alipay", 0, 100)
    assert [(code, kind) for _, code, kind, _ in page.events] == [
        (CODES[0], "abnormal_marked"),
        (CODES[0], "class_changed"),
    ]
    assert store.page("wechat", 0, 100).events == []


def test_expired_watches_stop_events_and_old_events_expire_with_their_cursors(tmp_path):
    store, cursors = WatchStore(tmp_path / "watch.sqlite"), Cursors(b"secret")
    a = Answer("operating", "A", 0, 0, 0, 0, V1)
    b = a._replace(risk_class="B")

    def day(i: int, ans: Answer) -> None:
        d = START + timedelta(days=i)
        derive(store, d, f"d{i}", V1, lambda codes: (answer_table({c: ans for c in codes}), _no))

    store.watch("alipay", "k", [CODES[0]], START, (10, 10))
    day(0, a)
    day(1, b)
    day(2, a)
    first = store.page("alipay", 0, 10)
    assert [k for _, _, k, _ in first.events] == ["class_changed", "class_changed"]
    halfway = cursors.encode("alipay", first.events[0][0])
    day(WATCH_DAYS, a)  # the watch has expired: no event, and it is no longer listed
    assert store.page("alipay", first.last_id, 10).events == []
    assert store.listing("alipay", START + timedelta(days=WATCH_DAYS))[0] == 0
    renewed = START + timedelta(days=WATCH_DAYS + 1)
    store.watch("alipay", "k", [CODES[0]], renewed, (10, 10))
    day(WATCH_DAYS + 1, b)  # watched anew: a first answer, no event
    day(WATCH_DAYS + 2, a)
    later = store.page("alipay", first.last_id, 10)
    assert [k for _, _, k, _ in later.events] == ["class_changed"]
    # By now the first events are past their 90 days and deleted: a cursor between them
    # expires, one after them still reads, and "from the start" gives what is kept.
    with pytest.raises(CursorExpired):
        store.page("alipay", cursors.decode("alipay", halfway), 10)
    assert store.page("alipay", first.last_id, 10).events == later.events
    assert store.page("alipay", 0, 10).events == later.events


def test_a_class_change_says_whether_a_record_or_the_calendar_moved_it(service_home):
    """Today's records read as on an earlier day give the earlier class back when only the
    days passing moved it (cause ``window``), and not when a record did (``record``)."""
    import mlflow

    from features.catalogue import FEATURE_NAMES
    from online_store.reader import OnlineStore
    from scoring.model import CLASSES
    from serving.events import _class_change_causes
    from training.registry import load_version

    mlflow.set_tracking_uri(f"sqlite:///{service_home / 'mlflow.db'}")
    model = load_version("credref-reference", "1").unwrap_python_model().model
    with OnlineStore(service_home / "online").current() as snap:
        now = snap.frame()
        earlier = snap.day - timedelta(days=3 * 365)
        then = snap.frame(day=earlier)
        op = now[FEATURE_NAMES[0]].notna().to_numpy()
        now_cls = model.score_frame(now[op][list(FEATURE_NAMES)], with_reasons=False).risk_class
        then_cls = model.score_frame(then[op][list(FEATURE_NAMES)], with_reasons=False).risk_class
        codes = now[op].uscc.to_numpy()
        aged = [(c, a, b) for c, a, b in zip(codes, then_cls, now_cls, strict=True) if a != b]
        assert aged, "three years of age move some household's class"
        code, was, is_now = aged[0]
        other = next(c for c in CLASSES if c not in (was, is_now))
        found = {
            code: [("class_changed", {"from": was, "to": is_now})],
            codes[0]: [("class_changed", {"from": other, "to": "X"})],
        }
        _class_change_causes(found, snap, model, earlier)
    assert found[code][0][1]["cause"] == "window"
    if codes[0] != code:
        assert found[codes[0]][0][1]["cause"] == "record"
