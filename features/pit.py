"""Point-in-time features and labels, as one SQL definition.

The SQL is written once, in DuckDB's dialect, over the record tables by name; the
embedded engine runs it as it is and the Spark engine runs the same text transpiled by
sqlglot (``features.engines``). Every "is this record usable on T" decision comes from
``records.policy``; every window is anchored on the as-of date T, so a record
published after T can never reach a feature.

Labels look only at (T, T + horizon], features only at (-inf, T]: the two windows
never overlap.
"""

from __future__ import annotations

from datetime import date

from features.catalogue import FEATURE_NAMES
from features.elapsed import ANCHORS, CALENDAR, DERIVED, ELAPSED
from records import policy as P
from records.geography import city_case_sql
from records.policy import Policy
from records.versions import with_sources


def _t(as_of: date) -> str:
    return f"DATE '{as_of.isoformat()}'"


def status_sql(as_of: date) -> str:
    """Every household registered on or before T, with its registration status on T.

    The status on T is the last status change registered on or before T; without one,
    the household's current status if it took effect on or before T; else operating.
    """
    t = _t(as_of)
    return f"""
    SELECT h.uscc, h.registered_on, h.org_form, h.industry, h.division_code,
           COALESCE(s.status_at,
                    CASE WHEN h.status_changed_on <= {t} THEN h.status ELSE 'operating' END)
               AS status_on
    FROM households h
    LEFT JOIN (
        SELECT uscc, max_by(new_status, changed_on) AS status_at
        FROM registration_changes r
        WHERE r.change_type = 'status' AND {P.registration_change_known(t)}
        GROUP BY uscc
    ) s ON s.uscc = h.uscc
    WHERE h.registered_on <= {t}
    """


def population_sql(as_of: date, status: str | None = None) -> str:
    """Households registered on or before T and operating on T (see :func:`status_sql`);
    ``status``: a relation already holding :func:`status_sql`'s rows (a CTE's name)."""
    return f"""
    SELECT uscc, registered_on, org_form, industry, division_code
    FROM {status or f"({status_sql(as_of)})"} st
    WHERE st.status_on = 'operating'
    """


def severity(r: str = "r") -> str:
    """A penalty's severity, 1 (minor) to 4 (revocation, ban): R07 is "severe" from
    ``features.catalogue.SEVERE_PENALTY``."""
    return f"""CASE
        WHEN {r}.penalty_kinds LIKE '%licence_revocation%' OR {r}.penalty_kinds LIKE '%practice_ban%' THEN 4
        WHEN {r}.penalty_kinds LIKE '%suspension_order%' OR {r}.penalty_kinds LIKE '%licence_suspension%'
             OR {r}.penalty_kinds LIKE '%business_restriction%' OR {r}.fine_yuan >= 100000 THEN 3
        WHEN {P.is_minor_penalty(r)} THEN 1
        ELSE 2 END"""


def _report_years(t: str) -> tuple[str, str]:
    """The last report year whose deadline has passed on T, and the year whose report
    T's year's filing period opens (the legal-use policy's reporting calendar)."""
    return P.last_due_report_year(t), P.open_report_year(t)


def changes_sql(t: str) -> str:
    """Operator and address changes registered in the last one and two years."""

    def count(kind: str, years: int) -> str:
        return (
            f"sum(CASE WHEN r.change_type = '{kind}' AND r.changed_on > {t} - INTERVAL {years} YEAR "
            f"THEN 1 ELSE 0 END) AS {kind}_changes_{years}y"
        )

    return f"""
        SELECT r.uscc, {count("operator", 1)}, {count("operator", 2)},
            {count("address", 1)}, {count("address", 2)}
        FROM registration_changes r
        WHERE {P.registration_change_known(t)}
        GROUP BY r.uscc"""


def reports_sql(t: str) -> str:
    """One pass over the reports of the last three due years and this year: filing facts
    (always usable), this year's filing, and the content of the latest published one."""
    last_year, this_year = _report_years(t)
    known, content = P.report_filing_known(t), P.report_content_usable(t)
    on_time = f"r.filed_on <= {P.report_deadline('r.report_year')}"
    return f"""
        SELECT r.uscc,
            max(CASE WHEN r.report_year = {last_year} AND {known} AND {on_time} THEN 1 ELSE 0 END) AS last_on_time,
            max(CASE WHEN r.report_year = {last_year} AND {known} AND NOT ({on_time}) THEN 1 ELSE 0 END) AS last_late,
            sum(CASE WHEN r.report_year BETWEEN {last_year} - 2 AND {last_year} AND {known}
                      AND {on_time} THEN 1 ELSE 0 END) AS on_time_3y,
            max(CASE WHEN r.report_year = {this_year} AND {known} THEN 1 ELSE 0 END) AS this_filed,
            max_by(CASE WHEN {content} THEN r.employees END,
                   CASE WHEN {content} THEN r.report_year END) AS reported_employees
        FROM annual_reports r
        WHERE r.report_year >= {last_year} - 2
        GROUP BY r.uscc"""


def abnormal_sql(t: str, policy: Policy) -> str:
    """Usable abnormal-operation markings: by cause, the last report's marking, days marked."""
    last_year, _ = _report_years(t)
    return f"""
        SELECT r.uscc,
            max(CASE WHEN r.cause IN ('report_not_filed', 'report_false') THEN 1 ELSE 0 END) AS abnormal_now_report,
            max(CASE WHEN r.cause = 'unreachable' THEN 1 ELSE 0 END) AS abnormal_now_unreachable,
            max(CASE WHEN r.cause = 'report_not_filed' AND r.marked_on > {P.report_deadline(last_year)}
                     THEN 1 ELSE 0 END) AS last_report_marked,
            min(r.marked_on) AS abnormal_since
        FROM abnormal_status r
        WHERE {P.abnormal_usable(t, policy)}
        GROUP BY r.uscc"""


def penalties_sql(t: str, policy: Policy) -> str:
    """Usable (in publicity) penalties: counts by publication date, fines, severity, recency."""
    return f"""
        SELECT r.uscc,
            sum(CASE WHEN r.published_on > {t} - INTERVAL 1 YEAR THEN 1 ELSE 0 END) AS penalties_1y,
            sum(CASE WHEN r.published_on > {t} - INTERVAL 3 YEAR THEN 1 ELSE 0 END) AS penalties_3y,
            sum(COALESCE(r.fine_yuan, 0)) AS penalty_fines_yuan,
            max({severity()}) AS penalty_max_severity,
            max(r.published_on) AS latest_penalty_on,
            count(DISTINCT r.violation_type) AS penalty_violation_types
        FROM penalties r
        WHERE {P.penalty_usable(t, policy)}
        GROUP BY r.uscc"""


def serious_sql(t: str, policy: Policy) -> str:
    """Households on the serious illegal and dishonest list on T."""
    return f"SELECT DISTINCT r.uscc FROM serious_dishonesty r WHERE {P.serious_usable(t, policy)}"


def spot_checks_sql(t: str, policy: Policy) -> str:
    """Usable spot checks (published, within 3 years) that found a problem."""
    return f"""
        SELECT r.uscc, count(*) AS spot_problems_3y
        FROM spot_checks r
        WHERE {P.spot_check_usable(t, policy)} AND r.result <> 'normal'
        GROUP BY r.uscc"""


def _registration_columns(t: str) -> dict[str, str]:
    return {
        "org_form_family": "CAST(p.org_form = 'family' AS INT)",
        "industry": "p.industry",
        "city": city_case_sql("p.division_code"),
        **{
            f"{kind}_changes_{y}y": f"CAST(COALESCE(chg.{kind}_changes_{y}y, 0) AS BIGINT)"
            for kind in ("operator", "address")
            for y in (1, 2)
        },
    }


def _report_columns(t: str) -> dict[str, str]:
    """Filing facts of the reports whose deadline has passed (only those can be late or
    missing: DOMAIN.md §6), and the content of the latest published one."""
    last_year, _ = _report_years(t)
    due = f"year(p.registered_on) <= {last_year}"
    missing = f"{due} AND COALESCE(rpt.last_on_time + rpt.last_late, 0) = 0"
    return {
        "last_report_late": "CAST(COALESCE(rpt.last_late, 0) AS INT)",
        "last_report_missing": f"CAST({missing} AS INT)",
        # missing and not yet marked: from 1 July until the marking comes
        "report_marking_pending": f"CAST({missing} AND COALESCE(abn.last_report_marked, 0) = 0 AS INT)",
        # due years among the last three, less those filed on time
        "reports_missing_3y": f"CAST(greatest(0, least(3, {last_year} - year(p.registered_on) + 1)) "
        "- COALESCE(rpt.on_time_3y, 0) AS BIGINT)",
        "reported_employees": "CAST(rpt.reported_employees AS DOUBLE)",
    }


_RECORD_COLUMNS = {
    "abnormal_now_report": "CAST(COALESCE(abn.abnormal_now_report, 0) AS INT)",
    "abnormal_now_unreachable": "CAST(COALESCE(abn.abnormal_now_unreachable, 0) AS INT)",
    "penalties_1y": "CAST(COALESCE(pen.penalties_1y, 0) AS BIGINT)",
    "penalties_3y": "CAST(COALESCE(pen.penalties_3y, 0) AS BIGINT)",
    "penalty_fines_yuan": "CAST(COALESCE(pen.penalty_fines_yuan, 0) AS DOUBLE)",
    "penalty_max_severity": "CAST(COALESCE(pen.penalty_max_severity, 0) AS INT)",
    "penalty_violation_types": "CAST(COALESCE(pen.penalty_violation_types, 0) AS BIGINT)",
    "serious_listed": "CAST(ser.uscc IS NOT NULL AS INT)",
    "spot_problems_3y": "CAST(COALESCE(spot.spot_problems_3y, 0) AS BIGINT)",
}


def _feature_columns(t: str, online: bool) -> str:
    """The catalogue's columns in order; ``online``: the calendar-derived ones replaced by
    their anchors (``features.elapsed``), as the online store keeps them."""
    exprs = {**_registration_columns(t), **_report_columns(t), **_RECORD_COLUMNS}
    if online:
        cols = [(n, exprs[n]) for n in FEATURE_NAMES if n not in DERIVED]
        cols += [(e.anchor, e.anchor_expr(t)) for e in ELAPSED]
    else:
        exprs |= {e.name: e.sql(t) for e in ELAPSED} | {CALENDAR.name: CALENDAR.sql(t)}
        cols = [(n, exprs[n]) for n in FEATURE_NAMES]
    return ",\n        ".join(f"{sql} AS {name}" for name, sql in cols)


def _parts(as_of: date, policy: Policy) -> dict[str, str]:
    """The named parts every feature query joins, each a small query over one record kind."""
    t = _t(as_of)
    return {
        "pop": population_sql(as_of),
        "chg": changes_sql(t),
        "rpt": reports_sql(t),
        "abn": abnormal_sql(t, policy),
        "pen": penalties_sql(t, policy),
        "ser": serious_sql(t, policy),
        "spot": spot_checks_sql(t, policy),
    }


def _features_select(as_of: date, policy: Policy, online: bool) -> tuple[dict[str, str], str]:
    parts = _parts(as_of, policy)
    joins = "\n    ".join(
        f"LEFT JOIN {name} ON {name}.uscc = p.uscc" for name in parts if name != "pop"
    )
    select = f"""
    SELECT
        p.uscc,
        {_t(as_of)} AS as_of,
        {_feature_columns(_t(as_of), online)}
    FROM pop p
    {joins}"""
    return parts, select


def feature_sql(as_of: date, policy: Policy = Policy.LEGAL, known_at: date | None = None) -> str:
    """One row per household operating on ``as_of``: ``uscc``, ``as_of``, the catalogue.

    ``known_at``: use only the record versions credref knew at the end of that day
    (``records.versions``); ``None`` means as known now. The final join of the named
    parts above, each a small query over one record kind."""
    parts, select = _features_select(as_of, policy, online=False)
    return with_sources(parts, select + "\n    ORDER BY p.uscc", known_at)


def publication_sql(
    as_of: date, known_at: date | None = None, identity: bool = True, only: str | None = None
) -> str:
    """What the online store keeps of every household registered on ``as_of``: status,
    (``identity``) the fields verification hashes, and for the operating households the
    features, calendar-derived ones as their anchors (``features.elapsed``); ``only``:
    those of the households in that relation alone (a refresh's candidates).

    The same parts as :func:`feature_sql`, so a publication is a snapshot of its day."""
    parts, select = _features_select(as_of, Policy.LEGAL, online=True)
    stored = [n for n in FEATURE_NAMES if n not in DERIVED] + list(ANCHORS)
    who = "h.name, h.operator_name, h.operator_id_hmac, h.address, " if identity else ""
    join = "JOIN households h ON h.uscc = st.uscc" if identity else ""
    final = f"""
    SELECT st.uscc, st.status_on AS status, {who}{", ".join(f"f.{n}" for n in stored)}
    FROM st {join}
    LEFT JOIN f ON f.uscc = st.uscc"""
    # no ORDER BY: the SQLite table is keyed by uscc, and sorting 11M wide rows (names
    # and addresses before hashing) was what ran out of memory under an 8 GB cap.
    # The population is the status query's operating rows: population_sql's own text,
    # computed once for both (at 11M, a second status pass was what ran out of memory
    # under the refresh's 3 GB cap).
    ctes = {"st": status_sql(as_of), **parts, "f": select}
    ctes["pop"] = population_sql(as_of, status="st")
    return with_sources(ctes, final, known_at, only)


# --- what the calendar alone moves ---------------------------------------------------

#: Every record date the SQL above compares with the as-of date T, by table, with the
#: windows it is compared through (``published_on > T - INTERVAL 1 YEAR``; "" for the
#: date itself). Between two as-of dates, the calendar alone changes a household's row
#: only through one of these, or through the reporting calendar (:func:`reporting_calendar`,
#: the same for everyone). A new comparison with T belongs here:
#: ``tests/test_calendar_moves.py`` finds every one in the SQL and checks it is listed.
CALENDAR_DATES: dict[str, dict[str, tuple[str, ...]]] = {
    "households": {"registered_on": ("",), "status_changed_on": ("",)},
    "registration_changes": {"changed_on": ("", "1 YEAR", "2 YEAR")},
    "annual_reports": {"filed_on": ("",)},
    "abnormal_status": {"marked_on": ("",), "restored_on": ("",)},
    "penalties": {
        "published_on": ("", "1 YEAR", "3 YEAR"),
        "publicity_end": ("",),
        "repaired_on": ("",),
        "withdrawn_on": ("",),
    },
    "serious_dishonesty": {"listed_on": ("",), "removed_on": ("",)},
    "spot_checks": {"published_on": ("", "3 YEAR")},
}


def reporting_calendar(as_of: date) -> str:
    """What the reporting calendar is on T, for everyone at once: the last due report
    year, the open report year, and whether its filing period is open. When two days
    differ in it (a 1 January or a 1 July between them), every row may move."""
    t = _t(as_of)
    last_year, this_year = _report_years(t)
    return (
        f"SELECT {last_year} AS last_year, {this_year} AS this_year, "
        f"{P.filing_period_open(t)} AS open"
    )


def calendar_moved_sql(before: date, after: date) -> str:
    """The households some of whose dates lie, through their window, between ``before``
    and ``after`` (a day's margin each side, for ``<`` against ``<=``): only their rows
    can move from the publication of ``before`` to that of ``after`` by the calendar
    alone, the reporting calendar staying the same. Over the records as they are known
    now; what changed since is the refresh's other half (records learnt)."""

    def between(column: str, window: str) -> str:
        shift = f" - INTERVAL {window}" if window else ""
        lo, hi = f"{_t(before)}{shift}", f"{_t(after)}{shift}"
        return f"{column} BETWEEN ({lo}) - INTERVAL 1 DAY AND ({hi}) + INTERVAL 1 DAY"

    return "\n    UNION ".join(
        f"SELECT uscc FROM {table} WHERE "
        + " OR ".join(between(c, w) for c, windows in columns.items() for w in windows)
        for table, columns in CALENDAR_DATES.items()
    )


#: Output columns of feature_sql, in order; checked against the catalogue at import.
FEATURE_COLUMNS = ("uscc", "as_of", *FEATURE_NAMES)


def adverse_events_sql() -> str:
    """Every published adverse record with its publication date (the label's events).

    Adverse: a published penalty above the minor kind, an abnormal marking, a serious
    listing, a licence revocation, a deregistration on the authority's initiative.
    """
    return f"""
    SELECT r.uscc, r.published_on AS event_on FROM penalties r
    WHERE {P.penalty_published()} AND NOT {P.is_minor_penalty()}
    UNION ALL SELECT r.uscc, r.marked_on FROM abnormal_status r
    UNION ALL SELECT r.uscc, r.listed_on FROM serious_dishonesty r
    UNION ALL SELECT r.uscc, r.changed_on FROM registration_changes r
    WHERE r.change_type = 'status'
      AND (r.new_status = 'revoked' OR (r.new_status = 'deregistered' AND r.reason = 'authority_initiated'))
    """


def outcome_sql(as_of: date, horizon_months: int = 12) -> str:
    """For every household in the register: 1 if an adverse record is published in
    (T, T + horizon], else 0. Outcomes are always read as known now: a training set as
    known at T takes its features from then and its labels from everything known since.
    """
    t = _t(as_of)
    end = f"{t} + INTERVAL {int(horizon_months)} MONTH"
    return f"""
    SELECT h.uscc, CAST(hit.uscc IS NOT NULL AS INT) AS label
    FROM households h LEFT JOIN (
        SELECT DISTINCT ev.uscc FROM ({adverse_events_sql()}) ev
        WHERE ev.event_on > {t} AND ev.event_on <= {end}
    ) hit ON hit.uscc = h.uscc
    """


def label_sql(as_of: date, horizon_months: int = 12) -> str:
    """1 if an adverse record is published in (T, T + horizon], for households operating on T.

    A household that deregisters voluntarily inside the window keeps its row: its label
    is 1 only if an adverse record was published before it left, else 0 (it left
    without an adverse event, which is what a platform would have wanted to know).
    Events count even if later repaired or withdrawn: they were published in the window.
    """
    t = _t(as_of)
    return f"""
    WITH pop AS ({population_sql(as_of)}),
    outcome AS ({outcome_sql(as_of, horizon_months)})
    SELECT p.uscc, {t} AS as_of, o.label
    FROM pop p JOIN outcome o ON o.uscc = p.uscc
    ORDER BY p.uscc
    """
