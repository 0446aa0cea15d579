"""The reporting calendar at its boundaries (DOMAIN.md §6; ``records.policy``, "the
reporting calendar"): a report for year Y is on time to 30 June of Y+1, overdue from
1 July; before then "not yet filed" is lawful, never a reason, and moves neither the
score nor the class. Exact expected values on one household's in-memory records."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from features.catalogue import FEATURE_NAMES
from features.pit import feature_sql
from scoring.model import PointsTable, ScoreScale, ScoringModel
from scoring.spec import CREDREF
from tests.helpers import H, household, micro

DAY = timedelta(days=1)
REGISTERED = date(2020, 3, 1)  # reports due for 2020 onwards


def report(year: int, filed_on: date | None) -> dict:
    return {"uscc": H, "report_year": year, "filed_on": filed_on, "published": True, "employees": 3}


def feats(records: dict, as_of: date) -> dict:
    rows = micro(records).sql(feature_sql(as_of)).df().to_dict("records")
    assert len(rows) == 1
    return rows[0]


def on_time_through(year: int, **extra) -> dict:
    """Reports 2020..year filed on time (in March), plus ``extra`` tables."""
    reports = [report(y, date(y + 1, 3, 15)) for y in range(2020, year + 1)]
    return {"households": [household(registered_on=REGISTERED)], "annual_reports": reports, **extra}


REPORT_FEATURES = (
    "last_report_late",
    "last_report_missing",
    "report_marking_pending",
    "reports_missing_3y",
)


@pytest.mark.parametrize(
    "as_of", [date(2024, 12, 31), date(2025, 1, 1), date(2025, 3, 31), date(2025, 6, 30)]
)
def test_a_report_not_yet_due_is_not_late_nor_missing(as_of):
    """Reports to 2023 filed on time; 2024's is filed from 1 January 2025 and is not due
    before 1 July 2025: on each of these days nothing about reports is adverse."""
    f = feats(on_time_through(2023), as_of)
    assert {k: f[k] for k in REPORT_FEATURES} == dict.fromkeys(REPORT_FEATURES, 0)


def test_the_filing_period_days_count_only_while_it_is_open_and_the_report_unfiled():
    records = on_time_through(2023)
    assert feats(records, date(2024, 12, 31))["open_report_unfiled_days"] == 0
    assert feats(records, date(2025, 1, 1))["open_report_unfiled_days"] == 1  # 0: nothing pending
    assert feats(records, date(2025, 1, 31))["open_report_unfiled_days"] == 31
    assert feats(records, date(2025, 6, 30))["open_report_unfiled_days"] == 181
    assert feats(records, date(2025, 7, 1))["open_report_unfiled_days"] == 0
    filed = on_time_through(2024)  # 2024's filed on 15 March 2025
    assert feats(filed, date(2025, 3, 14))["open_report_unfiled_days"] == 73
    assert feats(filed, date(2025, 3, 15))["open_report_unfiled_days"] == 0


def test_a_report_is_overdue_from_1_july_not_on_30_june():
    records = on_time_through(2023)  # 2024's never filed
    june, july = feats(records, date(2025, 6, 30)), feats(records, date(2025, 7, 1))
    assert (june["last_report_missing"], june["report_marking_pending"]) == (0, 0)
    assert (july["last_report_missing"], july["report_marking_pending"]) == (1, 1)
    assert july["reports_missing_3y"] == 1


def test_a_report_filed_on_30_june_is_on_time_and_on_1_july_late():
    on_deadline = on_time_through(2023)
    on_deadline["annual_reports"].append(report(2024, date(2025, 6, 30)))
    late = on_time_through(2023)
    late["annual_reports"].append(report(2024, date(2025, 7, 1)))
    assert feats(on_deadline, date(2025, 7, 1))["last_report_late"] == 0
    assert feats(late, date(2025, 6, 30))["last_report_late"] == 0  # not due yet
    assert feats(late, date(2025, 7, 1))["last_report_late"] == 1


def test_the_marking_ends_the_pending_marking_and_is_its_own_record():
    marked = on_time_through(
        2023,
        abnormal_status=[
            {"uscc": H, "marked_on": date(2025, 7, 15), "cause": "report_not_filed",
             "restored_on": None, "restore_reason": None}
        ],
    )  # fmt: skip
    before, on = feats(marked, date(2025, 7, 14)), feats(marked, date(2025, 7, 15))
    assert (before["report_marking_pending"], before["abnormal_now_report"]) == (1, 0)
    assert (on["report_marking_pending"], on["abnormal_now_report"]) == (0, 1)
    assert on["last_report_missing"] == 1


def test_the_reporting_cycle_runs_on_across_1_january_and_1_july_and_turns_on_1_august():
    records = on_time_through(2023)
    days = {d: feats(records, d)["reporting_cycle_day"] for d in (
        date(2024, 8, 1), date(2024, 12, 31), date(2025, 1, 1), date(2025, 6, 30),
        date(2025, 7, 1), date(2025, 7, 31), date(2025, 8, 1),
    )}  # fmt: skip
    assert list(days.values()) == [1, 153, 154, 334, 335, 365, 1]


# --- the standing reads no calendar feature ----------------------------------------------


def _additive_model() -> ScoringModel:
    """A points table over credref's catalogue with made-up points, the calendar
    features among the heaviest (so a leak into the standing would show)."""
    rng = np.random.default_rng(3)
    numeric, categorical = {}, {}
    for name in CREDREF.features:
        if name in CREDREF.categories:
            cats = CREDREF.categories[name]
            categorical[name] = {"points": {c: float(rng.normal(0, 0.1)) for c in cats}, "nan": 0.0}
            continue
        direction = CREDREF.monotone[CREDREF.features.index(name)] or 1
        heavy = 2.0 if name in CREDREF.calendar else 0.3
        # calendar features split where days of a cycle do
        cuts = [60.0, 160.0, 320.0] if name in CREDREF.calendar else [0.5, 2.5]
        numeric[name] = {
            "thresholds": cuts,
            "points": sorted(direction * heavy * rng.uniform(-1, 1, len(cuts) + 1)),
            "nan": 0.0,
        }
    import lightgbm as lgb

    booster = lgb.train(
        {"objective": "binary", "verbose": -1},
        lgb.Dataset(np.zeros((20, len(CREDREF.features))), np.arange(20) % 2),
        num_boost_round=1,
    )
    table = PointsTable(-2.0, numeric, categorical, CREDREF)
    reference = {"reporting_cycle_day": 153.0, "open_report_unfiled_days": 0.0}
    return ScoringModel(
        booster, "additive", 1.0, 0.0, (0.1, 0.2, 0.4), ScoreScale(), table, "v",
        CREDREF, 1.0, 0.0, reference,
    )  # fmt: skip


def test_score_class_and_reasons_ignore_the_calendar_features_the_pd_does_not():
    model = _additive_model()
    rng = np.random.default_rng(5)
    rows = pd.DataFrame(
        {
            n: (
                rng.choice(list(CREDREF.categories[n]), 200)
                if n in CREDREF.categories
                else rng.integers(0, 4, 200).astype(float)
            )
            for n in FEATURE_NAMES
        }
    )
    base = model.score_frame(rows)
    for since, days in [(365, 180), (185, 1), (1, 0), (270, 90)]:
        moved = model.score_frame(
            rows.assign(reporting_cycle_day=since, open_report_unfiled_days=days)
        )
        for col in ("score", "risk_class", "reasons", "long_run_pd"):
            assert (moved[col] == base[col]).all(), (since, days, col)
    pd_moved = model.score_frame(rows.assign(open_report_unfiled_days=180))["pd"]
    assert not np.allclose(
        pd_moved, model.score_frame(rows.assign(open_report_unfiled_days=0))["pd"]
    )


def test_a_reason_is_never_served_without_its_claim():
    """R07 says "severe": a penalty of ordinary severity (2) never gets it, however much
    the points push; R04 says "not filed on time": never without a late or missing report."""
    model = _additive_model()
    row = {n: 0.0 for n in FEATURE_NAMES} | {"industry": "H", "city": "Wuhan"}
    row |= {"penalty_max_severity": 2.0, "penalties_3y": 1.0, "reg_age_years": 10.0}
    row |= {"open_report_unfiled_days": 180.0}
    reasons = model.score_frame(pd.DataFrame([row]))["reasons"].iloc[0].split(";")
    assert "R07" not in reasons and "R04" not in reasons and "R01" not in reasons
    severe = model.score_frame(pd.DataFrame([row | {"penalty_max_severity": 4.0}]))
    assert "R07" in severe["reasons"].iloc[0].split(";")


def test_the_pd_moves_by_the_day_between_the_trained_positions():
    """On the first day of a month and on its last the PD is the model's own at that
    position; between them it moves from one to the other a little each day, never in a
    step half-way (a household still unfiled through June, lawfully)."""
    from dataclasses import replace

    from features.elapsed import CALENDAR

    model = replace(_additive_model(), between_positions=True)
    plain = _additive_model()
    row = {n: 0.0 for n in FEATURE_NAMES} | {"industry": "H", "city": "Wuhan", "reg_age_years": 6.0}
    days = [date(2026, 6, 1) + timedelta(days=k) for k in range(30)]
    frame = pd.DataFrame(
        [
            row
            | {
                "reporting_cycle_day": CALENDAR.value(d),
                "open_report_unfiled_days": (d - date(2025, 12, 31)).days,
            }
            for d in days
        ]
    )
    pds = model.score_frame(frame)["pd"].to_numpy()
    ends = plain.score_frame(frame.iloc[[0, -1]])["pd"].to_numpy()
    assert np.isclose(pds[0], ends[0]) and np.isclose(pds[-1], ends[-1])
    steps = np.diff(pds)
    assert abs(ends[-1] - ends[0]) > 0.01  # the month moves the PD: the check bites
    assert (np.sign(steps) == np.sign(ends[-1] - ends[0])).all()  # one way, every day
    assert np.abs(steps).max() < abs(ends[-1] - ends[0]) / 10  # no day takes a big share
    # the standing reads none of it
    assert model.score_frame(frame)["risk_class"].nunique() == 1
