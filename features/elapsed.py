"""Features that move with the calendar alone, each defined once, for SQL and for Python.

Most features change only when a record does (or when a record leaves a window). Five
change every day or every month, whatever the records: the years since registration,
the days in the current abnormal marking, the days since the latest penalty in
publicity, the days of the filing period passed with this year's report unfiled, and
the months to the next annual-report deadline. Each is a function of the as-of date T
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

from features.policy import filing_period_open, open_report_year

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


@dataclass(frozen=True)
class ReportCalendar:
    """Months from T to the next annual-report deadline (30 June, on time itself): public
    calendar context, the same for every household."""

    name: str = "months_to_report_deadline"

    def sql(self, t: str) -> str:
        return (
            f"CAST(CASE WHEN {filing_period_open(t)} THEN 6 - month({t}) "
            f"ELSE 18 - month({t}) END AS BIGINT)"
        )

    def value(self, as_of: date) -> int:
        return 6 - as_of.month if as_of <= date(as_of.year, 6, 30) else 18 - as_of.month


#: The penalty recency of a household without a penalty in publicity (three years).
NO_PENALTY_DAYS = 1095

#: The days of a filing period (1 January to 30 June, 181 days at most).
FILING_PERIOD_DAYS = 181

#: A household in an open filing period whose report for it is not filed yet (and due:
#: registered before the year began) has the period's first day as its anchor.
_UNFILED_SINCE = (
    f"CASE WHEN {filing_period_open('{t}')} AND year(p.registered_on) <= {open_report_year('{t}')} "
    "AND COALESCE(rpt.this_filed, 0) = 0 THEN make_date(year({t}), 1, 1) END"
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
