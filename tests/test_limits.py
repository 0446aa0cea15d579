"""The verification guessing limits (serving.limits) on a real SQLite store, with the
clock given, so days and years can pass in a test."""

from __future__ import annotations

from datetime import datetime

import pytest

from serving.limits import (
    CST,
    YEAR_S,
    Ask,
    Asker,
    LimitPolicy,
    LimitReached,
    VerifyLimits,
    expected_days,
    seconds_to_next_day,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=CST).timestamp()


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def days(self, n: float) -> None:
        self.t += n * 86400


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture()
def limits(state, clock):
    return VerifyLimits(state("limits"), clock=clock)


def ask(
    platform="alipay",
    subject="H1",
    fields=("operator_name",),
    key="k1",
    budget=100,
    platform_budget=10**6,
) -> Ask:
    return Ask(Asker(platform, key, budget, platform_budget), subject, tuple(fields))


def miss(fields=("operator_name",)):
    return lambda: dict.fromkeys(fields, False)


def hit(fields=("operator_name",)):
    return lambda: dict.fromkeys(fields, True)


def guesses(limits, a: Ask, n: int) -> int:
    """Send up to n mismatching claims; how many were answered."""
    for i in range(n):
        try:
            limits.verify(a, miss(a.fields))
        except LimitReached:
            return i
    return n


def test_five_mismatches_a_day_then_the_field_is_refused_until_the_next_day(limits, clock):
    assert guesses(limits, ask(), 6) == 5
    with pytest.raises(LimitReached) as e:
        limits.verify(ask(), hit())  # refused whatever the claim: no oracle in the refusal
    assert e.value.code == "verify_guess_limit" and e.value.fields == ["operator_name"]
    assert e.value.retry_after_s == seconds_to_next_day(clock.t)
    assert limits.verify(ask(fields=("address",)), miss(("address",))) == {"address": False}
    clock.days(1)
    assert guesses(limits, ask(), 6) == 5  # the year's 10 (5 reserved + pool 5) are spent
    clock.days(1)
    assert guesses(limits, ask(), 1) == 0


def test_matches_never_count(limits):
    for _ in range(50):
        assert limits.verify(ask(), hit()) == {"operator_name": True}
    assert guesses(limits, ask(), 5) == 5


def test_a_year_window_caps_one_platform_at_its_reserved_guesses_plus_the_pool(limits, clock):
    answered = 0
    for _ in range(10):
        answered += guesses(limits, ask(), 5)
        clock.days(1)
    assert answered == 10  # pair_yearly (10) = reserved (5) + pool (5)
    with pytest.raises(LimitReached) as e:
        limits.verify(ask(), miss())
    assert e.value.retry_after_s > 300 * 86400  # the oldest pool guess leaves in a year
    clock.days(366)
    assert guesses(limits, ask(), 5) == 5


def test_one_platform_spending_the_pool_leaves_every_other_its_reserved_guesses(limits, clock):
    assert guesses(limits, ask("attacker"), 5) == 5
    clock.days(1)
    assert guesses(limits, ask("attacker"), 5) == 5  # the pool spent: all 5 drew on it
    assert guesses(limits, ask("other-attacker"), 5) == 5  # its reserved: nothing more
    clock.days(1)
    assert guesses(limits, ask("other-attacker"), 1) == 0
    # The newcomer of the issue: three typos, then the right claim, is answered a match.
    assert guesses(limits, ask("wechat"), 3) == 3
    assert limits.verify(ask("wechat"), hit()) == {"operator_name": True}
    # A whole day of typos (5) is its own; only a sixth in the year meets the spent pool.
    assert guesses(limits, ask("wechat"), 5) == 2
    clock.days(1)
    with pytest.raises(LimitReached):
        limits.verify(ask("wechat"), hit())


def test_several_platforms_together_get_reserved_each_plus_one_pool(limits, clock):
    total = 0
    for _day in range(20):
        for p in ("a", "b", "c"):
            total += guesses(limits, ask(p), 5)
        clock.days(1)
    assert total == 3 * 5 + 5


def test_the_pair_limit_holds_whatever_the_number_of_keys(limits):
    answered = sum(guesses(limits, ask(key=f"k{i}"), 5) for i in range(4))
    assert answered == 5


def test_a_platforms_daily_guesses_are_bounded_across_households_and_keys(state, clock):
    lim = VerifyLimits(state("limits"), LimitPolicy(platform_daily=8), clock=clock)
    answered = sum(guesses(lim, ask(subject=f"H{i}", key=f"k{i % 3}"), 2) for i in range(9))
    assert answered == 8
    with pytest.raises(LimitReached) as e:
        lim.verify(ask(subject="H99", key="k9"), hit())
    assert e.value.code == "platform_guess_limit"
    assert lim.verify(ask(subject="H99", fields=()), hit(())) == {}  # found/not found only
    clock.days(1)
    assert guesses(lim, ask(subject="H99"), 1) == 1


def test_one_key_spends_at_most_half_its_platforms_guesses(state, clock):
    lim = VerifyLimits(state("limits"), LimitPolicy(platform_daily=8), clock=clock)
    assert sum(guesses(lim, ask(subject=f"H{i}", key="rogue"), 5) for i in range(5)) == 4
    with pytest.raises(LimitReached) as e:
        lim.verify(ask(subject="H9", key="rogue"), hit())
    assert e.value.code == "key_guess_limit"
    # the platform's other key still verifies its applicants, typos included
    assert lim.verify(ask(subject="H9", key="honest"), hit()) == {"operator_name": True}
    assert guesses(lim, ask(subject="H10", key="honest"), 4) == 4


def test_a_key_verifies_at_most_its_daily_number_of_distinct_households(limits, clock):
    for i in range(3):
        limits.verify(ask(subject=f"H{i}", budget=3), hit())
    limits.verify(ask(subject="H1", budget=3), hit())  # asked again: not a new household
    with pytest.raises(LimitReached) as e:
        limits.verify(ask(subject="H3", budget=3), hit())
    assert e.value.code == "household_budget_exhausted"
    limits.verify(ask(subject="H3", key="k2", budget=3), hit())  # another key's own budget
    clock.days(1)
    limits.verify(ask(subject="H3", budget=3), hit())


def test_a_key_gets_at_most_half_its_platforms_household_budget(limits):
    for i in range(5):
        limits.verify(ask(subject=f"H{i}", budget=100, platform_budget=10), hit())
    with pytest.raises(LimitReached) as e:
        limits.verify(ask(subject="H5", budget=100, platform_budget=10), hit())
    assert e.value.code == "household_budget_exhausted"
    for i in range(5, 10):
        limits.verify(ask(subject=f"H{i}", key="k2", platform_budget=10), hit())
    with pytest.raises(LimitReached) as e:  # the platform's 10 are spent, whatever the key
        limits.verify(ask(subject="H10", key="k3", platform_budget=10), hit())
    assert e.value.code == "platform_budget_exhausted"
    limits.verify(ask(subject="H1", key="k3", platform_budget=10), hit())  # asked today


def test_charging_households_on_the_other_paths(limits, clock):
    asker = Asker("alipay", "k1", 3, 100)
    assert limits.charge(asker, ["H1", "H2", "H1"]) == {}
    assert limits.charge(asker, ["H2", "H3", "H4", "H5"]) == {
        "H4": "household_budget_exhausted",
        "H5": "household_budget_exhausted",
    }
    with pytest.raises(LimitReached):  # one budget for every path: verify too
        limits.verify(ask(subject="H6", budget=3), hit())
    limits.verify(ask(subject="H3", budget=3), hit())
    clock.days(1)
    assert limits.charge(asker, ["H4"]) == {}


def test_only_an_operator_match_makes_a_relation(limits):
    limits.verify(ask(subject="H1", fields=("name",)), hit(("name",)))
    limits.verify(
        ask(subject="H2", fields=("name", "operator_name")), miss(("name", "operator_name"))
    )
    limits.verify(ask(subject="H3", fields=("operator_id_number",)), hit(("operator_id_number",)))
    limits.verify(ask(subject="H4"), hit())
    assert limits.matched_since("alipay", ["H1", "H2", "H3", "H4"], 30) == {"H3", "H4"}
    assert limits.matched_since("wechat", ["H3", "H4"], 30) == set()


def test_limits_are_shared_by_every_process_and_host_on_the_store(state, clock):
    worker_1 = VerifyLimits(state("limits"), clock=clock)
    worker_2 = VerifyLimits(state("limits"), clock=clock)
    assert guesses(worker_1, ask(), 3) == 3
    assert guesses(worker_2, ask(), 3) == 2
    worker_1.close()
    restarted = VerifyLimits(state("limits"), clock=clock)
    assert guesses(restarted, ask(), 1) == 0


def test_a_refused_request_records_nothing(limits):
    guesses(limits, ask(), 5)
    with pytest.raises(LimitReached):
        limits.verify(ask(fields=("operator_name", "address")), miss(("operator_name", "address")))
    # the address was not judged, so it was not counted either
    assert guesses(limits, ask(fields=("address",)), 5) == 5


def test_the_expected_days_of_the_searches_in_the_issue():
    assert expected_days(160, 1) > 7 * 365  # an ID number from a birth date, one platform
    assert expected_days(160, 3) > 3 * 365  # all three pilot platforms together
    assert expected_days(2612, 3) > 60 * 365  # an operator name from a surname
    # without the year window, 5 a day would give the ID number away in about 16 days
    unbounded = LimitPolicy(pair_yearly=10**6, reserved=10**6, household_pool=10**6)
    assert expected_days(160, 1, unbounded) == pytest.approx(15.5)
    assert YEAR_S == 365 * 86400
