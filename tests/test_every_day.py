"""Answers true on every day of a year, through the real refresh path.

The online store is refreshed in place for each of 367 days (30 June 2025 to 1 July 2026:
two reporting turns, a 1 January, the July markings), and every operating household is
scored from the publication as the service would. Each day:

* every reason served is true of the household's records on that day, checked against
  the record tables themselves (not the feature SQL): R04 only once a report is overdue,
  R07 only for a severe penalty, R01 only for a young business...;
* among households with no event of their own that day (their standing reads the same
  records as the day before: no record learnt, no deadline passed, no window or published
  band entered), at most 0.5% change class; over 30 days, at most 5%.
"""

from __future__ import annotations

import itertools
import shutil
from datetime import date, timedelta

import duckdb
import pandas as pd
import pytest

from features.catalogue import FEATURE_NAMES, RECENT_YEARS
from features.dataset import as_of_dates, build_training_set
from online_store.reader import OnlineStore
from online_store.refresh import RefreshTask, refresh
from tests.helpers import SECRET
from training.by_month import standing_view
from training.calibration import make_scoring_model
from training.data import load_training_set, split_out_of_time
from training.models import fit_booster, points_table

FIRST, LAST = date(2025, 6, 30), date(2026, 7, 1)
DAILY_MAX, MONTHLY_MAX = 0.005, 0.05


def _truths_sql(first: date, last: date) -> str:
    """For every household and every day from ``first`` to ``last``: is each reason's text
    true of its records on that day? Written from DOMAIN.md directly, not from the
    feature SQL or the policy module; one query for the whole range."""
    t = "d.day"
    # reports are on time to 30 June of the next year, overdue from 1 July: on day t the
    # last report that can be late is the one for year(t) - 1 from July, year(t) - 2 before
    last_due = f"(year({t}) - CASE WHEN month({t}) > 6 THEN 1 ELSE 2 END)"
    in_publicity = (
        f"p.published_on IS NOT NULL AND p.published_on <= {t} AND p.procedure = 'ordinary' "
        f"AND p.penalty_kinds <> 'warning' AND {t} <= p.publicity_end "
        f"AND (p.repaired_on IS NULL OR p.repaired_on > {t}) "
        f"AND (p.withdrawn_on IS NULL OR p.withdrawn_on > {t})"
    )
    severe = (
        "(p.penalty_kinds SIMILAR TO '.*(licence_revocation|practice_ban|suspension_order|"
        "licence_suspension|business_restriction).*' OR COALESCE(p.fine_yuan, 0) >= 100000)"
    )

    def changed(kind: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM registration_changes c WHERE c.uscc = h.uscc AND "
            f"c.change_type = '{kind}' AND c.changed_on <= {t} AND c.changed_on > {t} - INTERVAL 2 YEAR)"
        )

    return f"""
    WITH days AS (
      SELECT CAST(day AS DATE) AS day
      FROM range(DATE '{first.isoformat()}', DATE '{last.isoformat()}' + 1, INTERVAL 1 DAY) r(day)
    )
    SELECT d.day, h.uscc,
      date_diff('day', h.registered_on, {t}) < {RECENT_YEARS} * 365.25 AS R01,
      {changed("operator")} AS R02,
      {changed("address")} AS R03,
      EXISTS (SELECT 1 FROM (VALUES (0), (1), (2)) k(back)
              WHERE {last_due} - k.back >= year(h.registered_on) AND NOT EXISTS (
                SELECT 1 FROM annual_reports r WHERE r.uscc = h.uscc
                AND r.report_year = {last_due} - k.back
                AND r.filed_on <= make_date(CAST(r.report_year AS INT) + 1, 6, 30))) AS R04,
      EXISTS (SELECT 1 FROM abnormal_status a WHERE a.uscc = h.uscc AND a.marked_on <= {t}
              AND (a.restored_on IS NULL OR a.restored_on > {t})) AS R05,
      EXISTS (SELECT 1 FROM penalties p WHERE p.uscc = h.uscc AND {in_publicity}) AS R06,
      EXISTS (SELECT 1 FROM penalties p WHERE p.uscc = h.uscc AND {in_publicity}
              AND {severe}) AS R07,
      EXISTS (SELECT 1 FROM serious_dishonesty s WHERE s.uscc = h.uscc AND s.listed_on <= {t}
              AND (s.removed_on IS NULL OR s.removed_on > {t})) AS R08,
      EXISTS (SELECT 1 FROM spot_checks s WHERE s.uscc = h.uscc AND s.published_on <= {t}
              AND s.published_on > {t} - INTERVAL 3 YEAR AND s.result <> 'normal') AS R09
    FROM households h CROSS JOIN days d"""


@pytest.fixture(scope="module")
def model(small_warehouse, tmp_path_factory):
    """A small additive model trained on every month end of two years of the small domain."""
    home = tmp_path_factory.mktemp("year_model")
    con = duckdb.connect(str(small_warehouse), read_only=True)
    try:
        build_training_set(con, as_of_dates(date(2023, 1, 31), date(2024, 12, 31), 1), home)
    finally:
        con.close()
    df, _ = load_training_set(home)
    tr, va, _ = split_out_of_time(df, date(2024, 4, 30), date(2024, 10, 31))
    params = {"learning_rate": 0.1, "min_data_in_leaf": 50}
    booster = fit_booster("additive", tr, va, params, seed=1, rounds=200)
    return make_scoring_model(booster, "additive", va.X, va.y, points_table(booster, va.X))


def _truths_by_day(wh) -> dict[date, pd.DataFrame]:
    """Each day's reason truths by household (the refreshes apply no change set: the
    warehouse is the same on every day of the year)."""
    con = duckdb.connect(str(wh), read_only=True)
    try:
        truths = con.sql(_truths_sql(FIRST, LAST)).df()
    finally:
        con.close()
    return {
        day.date(): rows.drop(columns="day").set_index("uscc")
        for day, rows in truths.groupby("day")
    }


@pytest.fixture(scope="module")
def year(small_warehouse, model, tmp_path_factory):
    """Each day's answers (class, reasons, record features) and reason truths."""
    home = tmp_path_factory.mktemp("year")
    wh, online = home / "warehouse.duckdb", home / "online"
    shutil.copy(small_warehouse, wh)
    truths = _truths_by_day(wh)
    days, kinds = {}, set()
    day = FIRST
    while day <= LAST:
        report = refresh(RefreshTask(wh, None, online, SECRET, as_of=day, force=True))
        kinds.add(report.kind)
        with OnlineStore(online).current() as snap:
            assert snap.day == day
            frame = snap.frame()
        op = frame[(frame.status == "operating") & frame[FEATURE_NAMES[0]].notna()]
        op = op.set_index("uscc")
        scored = model.score_frame(op[list(FEATURE_NAMES)])
        view = standing_view(op, model.spec)
        days[day] = (view, scored[["risk_class", "reasons"]], truths[day].loc[op.index])
        day += timedelta(days=1)
    assert kinds == {"full", "incremental"}  # one first build, then the daily refresh
    return days


def test_every_reason_served_is_true_of_the_records_on_its_day(year):
    served: dict[str, int] = {}
    for day, (_, scored, truths) in year.items():
        for code in [f"R0{k}" for k in range(1, 10)]:
            got = scored.reasons.str.contains(code).to_numpy()
            untrue = got & ~truths[code].to_numpy()
            assert not untrue.any(), (day, code, list(scored.index[untrue][:3]))
            served[code] = served.get(code, 0) + int(got.sum())
    # the check bites: the reasons the domain's records bear were served, day after day
    assert {"R01", "R04", "R05", "R06"} <= {c for c, n in served.items() if n > 0}, served


def test_no_overdue_reason_on_the_first_day_of_a_filing_period(year):
    """On 1 January nobody can be late with this year's report: every R04 served then is
    for an earlier report (also held by the check above), and R04 is no more common than
    on 31 December."""
    dec, jan = year[date(2025, 12, 31)][1], year[date(2026, 1, 1)][1]
    assert jan.reasons.str.contains("R04").mean() <= dec.reasons.str.contains("R04").mean()


def _moves(before, after) -> tuple[int, float]:
    """Households in both whose record features are equal, and the share of them whose
    class changed."""
    (rec0, cls0, _), (rec1, cls1, _) = before, after
    both = rec0.index.intersection(rec1.index)
    a, b = rec0.loc[both], rec1.loc[both]
    same = ((a == b) | (a.isna() & b.isna())).all(axis=1).to_numpy()
    quiet = both[same]
    moved = cls0.risk_class.loc[quiet].to_numpy() != cls1.risk_class.loc[quiet].to_numpy()
    return len(quiet), float(moved.mean()) if len(quiet) else 0.0


def test_classes_move_with_records_not_with_the_calendar(year):
    days = sorted(year)
    daily = pd.Series({d: _moves(year[p], year[d])[1] for p, d in itertools.pairwise(days)})
    assert daily.max() <= DAILY_MAX, daily.sort_values().tail(5)
    for turn in (date(2025, 7, 1), date(2026, 1, 1), date(2026, 6, 30), date(2026, 7, 1)):
        assert daily[turn] <= DAILY_MAX, (turn, daily[turn])
    monthly = [_moves(year[d], year[d + timedelta(days=30)]) for d in days[:-30]]
    assert all(n > 1000 for n, _ in monthly)  # most households have no event in a month
    assert max(share for _, share in monthly) <= MONTHLY_MAX
    # by design, not only within the targets: the standing is a function of what it reads
    assert daily.max() == 0 and max(share for _, share in monthly) == 0


def test_the_class_moves_that_happen_have_records_behind_them(year):
    """The check above can fail: over the year classes do move, for households whose
    records moved (a marking, a penalty, an overdue report...)."""
    days = sorted(year)
    moved_with_records = 0
    for p, d in itertools.pairwise(days):
        (rec0, cls0, _), (rec1, cls1, _) = year[p], year[d]
        both = rec0.index.intersection(rec1.index)
        a, b = rec0.loc[both], rec1.loc[both]
        same = ((a == b) | (a.isna() & b.isna())).all(axis=1).to_numpy()
        moved = cls0.risk_class.loc[both].to_numpy() != cls1.risk_class.loc[both].to_numpy()
        moved_with_records += int((~same & moved).sum())
    assert moved_with_records > 50
