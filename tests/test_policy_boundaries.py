"""Each legal-use rule of DOMAIN.md §3 at its exact boundary: the record counts on the
boundary day and not the day after (or the reverse), on a handful of in-memory rows with
exact expected values, in the manner of Feast's point-in-time tests."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from features.pit import feature_sql
from tests.helpers import H, household, micro, penalty_row

T = date(2024, 9, 30)
DAY = timedelta(days=1)


def feats(records: dict, as_of: date) -> dict:
    rows = micro(records).sql(feature_sql(as_of)).df().to_dict("records")
    assert len(rows) == 1
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rows[0].items()}


def with_household(**tables) -> dict:
    return {"households": [household()], **tables}


def _row(**defaults):
    """A row builder: the defaults below, with what a case is about overridden."""
    return lambda **kw: {"uscc": H, **defaults, **kw}


marking = _row(
    marked_on=date(2024, 7, 2), cause="unreachable", restored_on=None, restore_reason=None
)
listing = _row(listed_on=date(2024, 3, 1), reason="heavy_fine", removed_on=None)
spot = _row(checked_on=date(2023, 5, 1), published_on=date(2023, 5, 20), result="unreachable")


def pen(**kw) -> dict:
    return {"penalties": [penalty_row(**kw)]}


def published(day: date) -> dict:
    return pen(published_on=day, decided_on=day - 5 * DAY, publicity_end=day + 1095 * DAY)


def unpublished(**kw) -> dict:
    return pen(published_on=None, publicity_end=None, **kw)


def change(day: date) -> dict:
    return {"registration_changes": [{"uscc": H, "change_type": "operator", "changed_on": day}]}


RESTORED = {"restore_reason": "address_registered"}

# (rule, records, feature, value on T)
CASES = [
    # registration facts: as registered on or before T
    ("change registered on T", change(T), "operator_changes_1y", 1),
    ("change registered the day after T", change(T + DAY), "operator_changes_1y", 0),
    # penalty: published on or before T ...
    ("penalty published on T", published(T), "penalties_1y", 1),
    ("penalty published the day after T", published(T + DAY), "penalties_1y", 0),
    # ... and T on or before the last day of publicity
    ("last day of publicity", pen(publicity_end=T), "penalties_3y", 1),
    ("the day after publicity ends", pen(publicity_end=T - DAY), "penalties_3y", 0),
    # ... and neither repaired nor withdrawn on or before T
    ("repaired on T", pen(repaired_on=T), "penalties_3y", 0),
    ("repaired the day after T", pen(repaired_on=T + DAY), "penalties_3y", 1),
    ("withdrawn on T", pen(withdrawn_on=T), "penalties_3y", 0),
    ("withdrawn the day after T", pen(withdrawn_on=T + DAY), "penalties_3y", 1),
    # warning alone or simple procedure: never
    ("a warning alone", unpublished(penalty_kinds="warning", fine_yuan=0.0), "penalties_3y", 0),
    ("simple procedure", unpublished(procedure="simple"), "penalties_3y", 0),
    # abnormal marking: marked on or before T and not yet restored on T
    ("marked on T", {"abnormal_status": [marking(marked_on=T)]}, "abnormal_now_unreachable", 1),
    ("marked after T", {"abnormal_status": [marking(marked_on=T + DAY)]}, "abnormal_now_unreachable", 0),
    ("restored on T", {"abnormal_status": [marking(restored_on=T, **RESTORED)]}, "abnormal_now_unreachable", 0),
    ("restored after T", {"abnormal_status": [marking(restored_on=T + DAY, **RESTORED)]}, "abnormal_now_unreachable", 1),
    # serious list: listed on or before T and not removed on T
    ("listed on T", {"serious_dishonesty": [listing(listed_on=T)]}, "serious_listed", 1),
    ("listed after T", {"serious_dishonesty": [listing(listed_on=T + DAY)]}, "serious_listed", 0),
    ("removed on T", {"serious_dishonesty": [listing(removed_on=T)]}, "serious_listed", 0),
    ("removed after T", {"serious_dishonesty": [listing(removed_on=T + DAY)]}, "serious_listed", 1),
    # spot check: published on or before T and within 3 years of T
    ("spot check published on T", {"spot_checks": [spot(published_on=T)]}, "spot_problems_3y", 1),
    ("spot check published after T", {"spot_checks": [spot(published_on=T + DAY)]}, "spot_problems_3y", 0),
    ("published 3 years less a day before T", {"spot_checks": [spot(published_on=date(2021, 10, 1))]}, "spot_problems_3y", 1),
    ("published exactly 3 years before T", {"spot_checks": [spot(published_on=date(2021, 9, 30))]}, "spot_problems_3y", 0),
]  # fmt: skip


@pytest.mark.parametrize("rule, records, feature, value", CASES, ids=[c[0] for c in CASES])
def test_each_rule_at_its_boundary(rule, records, feature, value):
    assert feats(with_household(**records), T)[feature] == value


def _report(published: bool, filed_on: date) -> dict:
    return {
        "uscc": H,
        "report_year": 2023,
        "filed_on": filed_on,
        "published": published,
        "employees": 7,
        "revenue_yuan": 1.0,
        "has_online_shop": False,
    }


def test_report_content_only_when_published_and_filing_facts_always():
    hidden = feats(with_household(annual_reports=[_report(False, date(2024, 5, 1))]), T)
    shown = feats(with_household(annual_reports=[_report(True, date(2024, 5, 1))]), T)
    assert hidden["reported_employees"] is None and shown["reported_employees"] == 7
    assert hidden["last_report_missing"] == shown["last_report_missing"] == 0  # filed: a fact


def test_a_report_filed_on_30_june_is_on_time_and_the_day_after_is_late():
    on_time = feats(with_household(annual_reports=[_report(True, date(2024, 6, 30))]), T)
    late = feats(with_household(annual_reports=[_report(True, date(2024, 7, 1))]), T)
    assert (on_time["last_report_late"], late["last_report_late"]) == (0, 1)
