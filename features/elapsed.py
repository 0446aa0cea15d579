"""Features that move with the calendar alone, each defined once, for SQL and for Python.

Most features change only when a record does (or when a record leaves a window). Four
change every day or every month for every household, whatever its records: the years
since registration, the days in the current abnormal marking, the days since the latest
penalty in publicity and the months to the next annual-report deadline. Each is a
function of the as-of date T and at most one record date, its *anchor*.

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

DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class Elapsed:
    """``name`` = the time from ``anchor`` to T: days (capped at ``cap``), or years.

    ``when_none`` is the value of a household without an anchor (no marking, no penalty
    in publicity); ``anchor_sql`` is where the feature SQL finds the anchor."""

    name: str
    anchor: str
    anchor_sql: str
    years: bool = False
    cap: int | None = None
    when_none: int | None = None

    def sql(self, t: str) -> str:
        days = f"date_diff('day', {self.anchor_sql}, {t})"
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
    """Months from T to the next annual-report deadline (30 June): public calendar
    context, the same for every household."""

    name: str = "months_to_report_deadline"

    def sql(self, t: str) -> str:
        return (
            f"CAST(CASE WHEN {t} < make_date(year({t}), 6, 30) THEN 6 - month({t}) "
            f"ELSE 18 - month({t}) END AS BIGINT)"
        )

    def value(self, as_of: date) -> int:
        return 6 - as_of.month if as_of < date(as_of.year, 6, 30) else 18 - as_of.month


#: The penalty recency of a household without a penalty in publicity (three years).
NO_PENALTY_DAYS = 1095

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
