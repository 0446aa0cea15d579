"""The records behind each reason code of one household on a day, and their dates.

For every reason the household's records bear on T: which of its own records count (by
kind and date, never a personal field), the first day each stops counting if nothing
else changes, and the earliest day the household can end it early (credit repair,
early removal). The usable-on-T tests and the dates come from ``records.policy``; the
windows of R01-R04 from the feature definitions (``features.pit``), so the report and
the features cannot disagree about a date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from features.catalogue import RECENT_YEARS, SEVERE_PENALTY
from features.elapsed import DAYS_PER_YEAR
from features.pit import severity
from records import policy as P

#: The change windows of R02 and R03 (``features.pit.changes_sql``: 1 and 2 years).
CHANGE_WINDOW_YEARS = 2
#: Due report years R04 looks back on (``features.pit.reports_sql``: the last three).
REPORT_YEARS_COUNTED = 3


@dataclass(frozen=True)
class Evidence:
    """One record of the household behind a reason.

    ``record``: the kind and its own reference (a decision number, a report year...);
    ``dated``: the record's own date; ``stops_counting``: the first day it no longer
    counts (None: it counts until the household acts); ``ends_early_from``: the earliest
    day a repair or early removal can end it (None: not possible, or not before)."""

    reason: str
    kind: str
    reference: str
    dated: date
    detail: str
    stops_counting: date | None
    ends_early_from: date | None


def _t(as_of: date) -> str:
    return f"DATE '{as_of.isoformat()}'"


def _sql(as_of: date) -> str:
    """One row per (reason, record) for the household bound to ``$uscc``."""
    t = _t(as_of)
    last_due = P.last_due_report_year(t)
    recent_days = int(-(-RECENT_YEARS * DAYS_PER_YEAR // 1))  # the first day not "recent"
    severe = f"({severity()}) >= {SEVERE_PENALTY}"
    return f"""
    SELECT 'R01', 'registration', '', r.registered_on, '',
           CAST(r.registered_on + INTERVAL {recent_days} DAY AS DATE), NULL
    FROM households r
    WHERE r.uscc = $uscc AND r.registered_on <= {t}
      AND date_diff('day', r.registered_on, {t}) < {RECENT_YEARS} * {DAYS_PER_YEAR}
    UNION ALL
    SELECT CASE r.change_type WHEN 'operator' THEN 'R02' ELSE 'R03' END, 'change', '',
           r.changed_on, r.change_type,
           {P.first_day_outside("r.changed_on", CHANGE_WINDOW_YEARS)}, NULL
    FROM registration_changes r
    WHERE r.uscc = $uscc AND r.change_type IN ('operator', 'address')
      AND {P.registration_change_known(t)}
      AND r.changed_on > {t} - INTERVAL {CHANGE_WINDOW_YEARS} YEAR
    UNION ALL
    SELECT 'R04', 'annual_report', CAST(y.year AS VARCHAR), {P.report_deadline("y.year")},
           CASE WHEN r.filed_on IS NOT NULL AND {P.report_filing_known(t)} THEN 'late'
                ELSE 'missing' END,
           make_date(CAST(y.year AS INT) + {REPORT_YEARS_COUNTED} + 1, 7, 1), NULL
    FROM households h
    CROSS JOIN range({last_due} - {REPORT_YEARS_COUNTED - 1}, {last_due} + 1) y(year)
    LEFT JOIN annual_reports r ON r.uscc = h.uscc AND r.report_year = y.year
    WHERE h.uscc = $uscc AND y.year >= year(h.registered_on)
      AND NOT COALESCE({P.report_filing_known(t)} AND r.filed_on <= {P.report_deadline("y.year")}, FALSE)
    UNION ALL
    SELECT 'R05', 'abnormal_marking', '', r.marked_on, r.cause, {P.abnormal_stops_counting()}, NULL
    FROM abnormal_status r
    WHERE r.uscc = $uscc AND {P.abnormal_usable(t)}
    UNION ALL
    SELECT 'R06', 'penalty', r.decision_no, r.published_on, r.penalty_kinds,
           {P.penalty_stops_counting()}, {P.penalty_repairable_from()}
    FROM penalties r
    WHERE r.uscc = $uscc AND {P.penalty_usable(t)}
    UNION ALL
    SELECT 'R07', 'penalty', r.decision_no, r.published_on, r.penalty_kinds,
           {P.penalty_stops_counting()}, {P.penalty_repairable_from()}
    FROM penalties r
    WHERE r.uscc = $uscc AND {P.penalty_usable(t)} AND {severe}
    UNION ALL
    SELECT 'R08', 'serious_list', '', r.listed_on, r.reason,
           {P.serious_stops_counting()}, {P.serious_removable_from()}
    FROM serious_dishonesty r
    WHERE r.uscc = $uscc AND {P.serious_usable(t)}
    UNION ALL
    SELECT 'R09', 'spot_check', '', r.published_on, r.result, {P.spot_check_stops_counting()}, NULL
    FROM spot_checks r
    WHERE r.uscc = $uscc AND {P.spot_check_usable(t)} AND r.result <> 'normal'
    """


def evidence(con: duckdb.DuckDBPyConnection, uscc: str, as_of: date) -> list[Evidence]:
    """The household's records behind each reason code on ``as_of``, by reason and date.

    A repair date already passed is ``as_of`` (it can be applied for now); one on or
    after the record stops counting anyway is None (repair would not end it sooner)."""
    rows = con.execute(_sql(as_of), {"uscc": uscc}).fetchall()
    out = []
    for reason, kind, ref, dated, detail, stops, early in rows:
        if early is not None:
            early = max(early, as_of)
            if stops is not None and early >= stops:
                early = None
        out.append(Evidence(reason, kind, ref, dated, detail, stops, early))
    return sorted(out, key=lambda e: (e.reason, e.dated, e.reference))
