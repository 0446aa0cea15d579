"""Features that move with the calendar alone, each defined once, for SQL and for Python.

Most features change only when a record does (or when a record leaves a window). Five
change every day or every month, whatever the records: the years since registration,
the days in the current abnormal marking, the days since the latest penalty in
publicity, the days of the filing period passed with this year's report unfiled, and
the day of the reporting cycle. Each is a function of the as-of date T
and at most one date, its *anchor*.

A snapshot computes them in SQL (:func:`features.pit.feature_sql` renders :meth:`sql`).
The online store keeps the anchor instead of the value, and the service derives the
value for its publication's day with :meth:`value` (Feast's and Tecton's on-demand
features): otherwise every daily refresh would rewrite every household. Both renderings
sit side by side in one class, and a test holds them equal on every day of several years
and on every anchor of a generated domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from records.policy import filing_period_open, open_report_year

DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class Elapsed:
    """``name`` = the time from ``anchor`` to T: days (capped at ``cap``), or years.

    ``when_none`` is the value of a household without an anchor (no marking, no penalty
    in publicity); ``anchor_sql`` is where the feature SQL finds the anchor (``{t}`` in
    it stands for T, for an anchor that depends on T's place in the calendar)."""

    name: str
    anchor: str
    anchor_sql: str
    years: bool = False
    cap: int | None = None
    when_none: int | None = None

    def anchor_expr(self, t: str) -> str:
        return self.anchor_sql.replace("{t}", t)

    def sql(self, t: str) -> str:
        days = f"date_diff('day', {self.anchor_expr(t)}, {t})"
        if self.when_none is not None:
            days = f"COALESCE({days}, {self.when_none})"
        if self.cap is not None:
            days = f"least({days}, {self.cap})"
        if self.years:
            return f"CAST({days} AS DOUBLE) / {DAYS_PER_YEAR}"
        return f"CAST({days} AS BIGINT)"

    def value(self, anchor: date | None, as_of: date) -> float | int:
        if anchor is None:
            if self.when_none is None:
                raise ValueError(f"{self.name} needs its anchor {self.anchor}")
            days = self.when_none
        else:
            days = (as_of - anchor).days
        if self.cap is not None:
            days = min(days, self.cap)
        return float(days) / DAYS_PER_YEAR if self.years else days

    def values(self, anchors: np.ndarray, as_of: date) -> np.ndarray:
        """:meth:`value` for many households at once: ``anchors`` as ``datetime64[D]``
        (``NaT`` for none), the values as floats (``NaN`` where an anchor is needed and
        missing). Whole arrays, so an 11M publication's day is derived in numpy."""
        days = (np.datetime64(as_of, "D") - anchors).astype("timedelta64[D]").astype(float)
        missing = np.isnat(anchors)
        days[missing] = np.nan if self.when_none is None else self.when_none
        if self.cap is not None:
            days = np.minimum(days, self.cap)
        return days / DAYS_PER_YEAR if self.years else days


@dataclass(frozen=True)
class ReportCalendar:
    """The day of the reporting cycle on T, counted from 1 August (the day after the
    July markings of missing reports) to 31 July: 1 on 1 August, 153 on 31 December, 154
    on 1 January, 334 on 30 June, 335 on 1 July, 365 (366) on 31 July. Public calendar
    context, the same for everyone. It runs on across 1 January and across 30 June to
    1 July, so a day next to a month end a model learnt from reads as that month end;
    it turns when the markings are done, when nothing pending is left to a household
    that filed."""

    name: str = "reporting_cycle_day"

    def sql(self, t: str) -> str:
        start = (
            f"CASE WHEN {t} > make_date(year({t}), 7, 31) THEN make_date(year({t}), 7, 31) "
            f"ELSE make_date(year({t}) - 1, 7, 31) END"
        )
        return f"CAST(date_diff('day', {start}, {t}) AS BIGINT)"

    def value(self, as_of: date) -> int:
        after = as_of > date(as_of.year, 7, 31)
        return (as_of - date(as_of.year if after else as_of.year - 1, 7, 31)).days


#: The penalty recency of a household without a penalty in publicity (three years).
NO_PENALTY_DAYS = 1095

#: The days of a filing period (1 January to 30 June, 181 days at most).
FILING_PERIOD_DAYS = 181

#: A household in an open filing period whose report for it is not filed yet (and due:
#: registered before the year began) has the eve of the period as its anchor, so its days
#: count from 1 on 1 January: 0 is "nothing pending" (filed, or no period open), never
#: "the period has just begun".
_UNFILED_SINCE = (
    f"CASE WHEN {filing_period_open('{t}')} AND year(p.registered_on) <= {open_report_year('{t}')} "
    "AND COALESCE(rpt.this_filed, 0) = 0 THEN make_date(year({t}) - 1, 12, 31) END"
)

ELAPSED: tuple[Elapsed, ...] = (
    Elapsed("reg_age_years", "registered_on", "p.registered_on", years=True),
    Elapsed("abnormal_days", "abnormal_since", "abn.abnormal_since", when_none=0),
    Elapsed(
        "penalty_recency_days",
        "latest_penalty_on",
        "pen.latest_penalty_on",
        cap=NO_PENALTY_DAYS,
        when_none=NO_PENALTY_DAYS,
    ),
    Elapsed(
        "open_report_unfiled_days",
        "report_unfiled_since",
        _UNFILED_SINCE,
        cap=FILING_PERIOD_DAYS,
        when_none=0,
    ),
)
CALENDAR = ReportCalendar()
#: Features the online store derives at request time instead of storing.
DERIVED = (*(e.name for e in ELAPSED), CALENDAR.name)
#: The anchor columns the online store keeps for them.
ANCHORS = tuple(e.anchor for e in ELAPSED)


def derive(anchors: dict[str, date | None], as_of: date) -> dict[str, float | int]:
    """The derived features of one household on ``as_of`` from its anchors."""
    out: dict[str, float | int] = {e.name: e.value(anchors[e.anchor], as_of) for e in ELAPSED}
    out[CALENDAR.name] = CALENDAR.value(as_of)
    return out


# --- the calendar positions a model learns, and the days between them ---------------------

#: Days of each month of a reporting cycle (August to July), February as in a common year.
_CYCLE_MONTHS = (31, 30, 31, 30, 31, 31, 28, 31, 30, 31, 30, 31)
_CYCLE_STARTS = tuple(1 + sum(_CYCLE_MONTHS[:k]) for k in range(12))
#: The cycle day of 31 December: the day before the filing period's first.
_DECEMBER_31 = _CYCLE_STARTS[5] - 1
_STARTS = np.asarray(_CYCLE_STARTS, dtype=float)
_LENGTHS = np.asarray(_CYCLE_MONTHS, dtype=float)


def calendar_brackets(cycle_day: np.ndarray, unfiled_days: np.ndarray):
    """The calendar features at the two positions a model is trained on around each day
    (the first day of its month and its month end: ``features.dataset.dense_dates``), and
    the weight of the later one, 0 on the first day and 1 on the month end.

    Between the two, a model's splits would jump half-way; the point-in-time PD instead
    moves from one to the other by the day (``scoring.model``). A household unfiled on
    the day was unfiled on the first of the month and is read as still unfiled at its end.
    In a leap year the days after 28 February are read one day late."""
    c = np.clip(np.asarray(cycle_day, dtype=float), 1, 365)
    month = np.searchsorted(_STARTS, c, side="right") - 1
    first = _STARTS[month]
    last = first + _LENGTHS[month] - 1
    weight = (c - first) / (last - first)
    unfiled = np.asarray(unfiled_days, dtype=float) > 0
    u0 = np.where(unfiled, np.clip(first - _DECEMBER_31, 0, FILING_PERIOD_DAYS), 0.0)
    u1 = np.where(unfiled, np.clip(last - _DECEMBER_31, 0, FILING_PERIOD_DAYS), 0.0)
    return (first, u0), (last, u1), weight
