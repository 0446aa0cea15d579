"""The legal-use policy (``../shared/DOMAIN.md`` §3): when a record may be used on date T.

Each rule is one small function returning a SQL predicate over one record (alias
``r``) and the as-of date expression ``t``. The feature SQL uses these and nothing
else to decide what is usable, for historical snapshots and today's alike.

``Policy.ALL_PUBLISHED`` exists only to *measure* what the policy costs: it keeps the
"published on or before T" part of every rule and drops publicity ends, repairs,
withdrawals, restorations and removals. It is never served.
"""

from __future__ import annotations

from enum import StrEnum

#: A province's "low fine" threshold in yuan [assumption]: public criticism or a fine up
#: to this amount is published for 3 months only (SAMR Order 45, art. 14).
LOW_FINE_YUAN = 3000

#: Penalty kinds after which publicity can never end early (SAMR Order 45, art. 16).
NEVER_REPAIRABLE = ("suspension_order", "licence_revocation", "practice_ban")


def never_repairable(kinds: str) -> str:
    """The penalty kinds (a ';'-separated column) include one that is never repairable:
    a credit repair recorded on such a penalty is not lawful, so ingestion quarantines it."""
    alternatives = "|".join(NEVER_REPAIRABLE)
    return f"regexp_matches({kinds}, '(^|;)({alternatives})(;|$)')"


class Policy(StrEnum):
    LEGAL = "legal"
    ALL_PUBLISHED = "all_published"  # measurement only, never served


def penalty_published(r: str = "r") -> str:
    """A penalty is published at all: ordinary procedure, not a warning alone, with a
    publication date (SAMR Order 45, art. 6 and 7). Whether it is usable on T is
    :func:`penalty_usable`."""
    return (
        f"({r}.published_on IS NOT NULL AND {r}.procedure = 'ordinary' "
        f"AND {r}.penalty_kinds <> 'warning')"
    )


def penalty_usable(t: str, policy: Policy = Policy.LEGAL, r: str = "r") -> str:
    """A penalty is usable on T while it is in publicity.

    SAMR Order 45 (2021): only ordinary-procedure decisions other than a warning alone are
    published (published_on is null otherwise); publicity runs to ``publicity_end``;
    credit repair ends it early (``repaired_on``); a changed or annulled decision is
    withdrawn (``withdrawn_on``). Usable: published on or before T, T on or before the
    publicity end, neither repaired nor withdrawn on or before T.
    """
    published = f"{penalty_published(r)} AND {r}.published_on <= {t}"
    if policy is Policy.ALL_PUBLISHED:
        return f"({published})"
    return (
        f"({published} AND {t} <= {r}.publicity_end "
        f"AND ({r}.repaired_on IS NULL OR {r}.repaired_on > {t}) "
        f"AND ({r}.withdrawn_on IS NULL OR {r}.withdrawn_on > {t}))"
    )


def abnormal_usable(t: str, policy: Policy = Policy.LEGAL, r: str = "r") -> str:
    """An abnormal-operation marking is usable while marked and not yet restored.

    Restoration (恢复正常记载状态) is credit repair: after it the record is not used
    (SAMR 信用修复管理办法 2021; NDRC Order 36).
    """
    marked = f"{r}.marked_on <= {t}"
    if policy is Policy.ALL_PUBLISHED:
        return f"({marked})"
    return f"({marked} AND ({r}.restored_on IS NULL OR {r}.restored_on > {t}))"


def serious_usable(t: str, policy: Policy = Policy.LEGAL, r: str = "r") -> str:
    """A serious-list entry is usable while listed and not removed (SAMR Order 44)."""
    listed = f"{r}.listed_on <= {t}"
    if policy is Policy.ALL_PUBLISHED:
        return f"({listed})"
    return f"({listed} AND ({r}.removed_on IS NULL OR {r}.removed_on > {t}))"


def spot_check_usable(t: str, policy: Policy = Policy.LEGAL, r: str = "r") -> str:
    """A spot-check result is usable when published on or before T and within 3 years.

    [policy] of credref: the 3-year window mirrors the publicity of ordinary penalties.
    """
    published = f"{r}.published_on <= {t}"
    if policy is Policy.ALL_PUBLISHED:
        return f"({published})"
    return f"({published} AND {r}.published_on > {t} - INTERVAL 3 YEAR)"


def report_filing_known(t: str, r: str = "r") -> str:
    """Filing facts (filed, on time, late, missing) are always usable once they exist."""
    return f"({r}.filed_on IS NOT NULL AND {r}.filed_on <= {t})"


def report_content_usable(t: str, r: str = "r") -> str:
    """Report content only if the household chose to publish it (个体工商户年度报告暂行办法)."""
    return f"({report_filing_known(t, r)} AND {r}.published)"


# --- the reporting calendar (DOMAIN.md §6: the reporting calendar is not a risk) -------
#
# A household's annual report for year Y is filed between 1 January and 30 June of Y+1
# (个体工商户年度报告暂行办法): the period is open on 30 June itself, so a report is
# overdue from 1 July. Before then "not yet filed" is lawful and never a reason; a report
# still missing on 1 July is a record against the household (R04), and the marking that
# follows in July is another (R05). Every feature and every reason reads the calendar
# through these four functions.


def last_due_report_year(t: str) -> str:
    """The last report year whose deadline has passed on T: Y such that T is on or after
    1 July of Y+1 (so on 30 June the year before last; on 1 July last year)."""
    return f"(year({t}) - CASE WHEN {t} > make_date(year({t}), 6, 30) THEN 1 ELSE 2 END)"


def open_report_year(t: str) -> str:
    """The report year whose filing period T's year opens (filed 1 January - 30 June):
    last year's. Open on T only when :func:`filing_period_open`."""
    return f"(year({t}) - 1)"


def filing_period_open(t: str) -> str:
    """T lies in a filing period: 1 January to 30 June, both included."""
    return f"({t} <= make_date(year({t}), 6, 30))"


def report_deadline(year: str) -> str:
    """The last day a report for ``year`` is on time: 30 June of the next year."""
    return f"make_date({year} + 1, 6, 30)"


def registration_change_known(t: str, r: str = "r") -> str:
    """Registration facts are always usable, as registered on or before T."""
    return f"({r}.changed_on <= {t})"


def is_minor_penalty(r: str = "r") -> str:
    """Public criticism or a low fine only: the 3-month-publicity kind (not adverse)."""
    only_minor_kinds = (
        f"regexp_matches({r}.penalty_kinds, '^(public_criticism|fine)(;(public_criticism|fine))*$')"
    )
    return f"({only_minor_kinds} AND COALESCE({r}.fine_yuan, 0) <= {LOW_FINE_YUAN})"


# --- when a record stops counting, and when the household can end it early ----------
#
# The dates a household is told in its report (``household.evidence``): each is the
# first day the matching ``*_usable`` predicate above turns false for a record usable
# today, if nothing else changes. NULL: no date the rules fix (a marking counts until
# it is restored, which the household brings about by acting).

#: Credit repair of a penalty: possible after 6 months of publicity, after a year in
#: these fields (信用修复管理办法 art. 9; SAMR Order 45).
REPAIR_AFTER_MONTHS, REPAIR_AFTER_MONTHS_SENSITIVE = 6, 12
SENSITIVE_VIOLATIONS = ("food_safety", "drug_safety", "special_equipment")
#: A serious-list entry: removed after 3 years, early removal after 1 (SAMR Order 44).
SERIOUS_LIST_YEARS, SERIOUS_EARLY_REMOVAL_YEARS = 3, 1
#: A spot check's result counts for 3 years (:func:`spot_check_usable`).
SPOT_CHECK_YEARS = 3


def _day(expr: str) -> str:
    return f"CAST({expr} AS DATE)"


def first_day_outside(anchor: str, years: int) -> str:
    """The first T with ``anchor <= T - INTERVAL years YEAR``: the day a window of
    ``years`` anchored on a date no longer holds it (a 29 February anchor leaves on
    1 March, since ``T - 1 YEAR`` clamps 29 February to the 28th)."""
    plus = _day(f"{anchor} + INTERVAL {years} YEAR")
    return f"(CASE WHEN day({plus}) <> day({anchor}) THEN {_day(f'{plus} + INTERVAL 1 DAY')} ELSE {plus} END)"


def penalty_stops_counting(r: str = "r") -> str:
    """The day after its publicity's last day, or its repair or withdrawal if earlier."""
    after_publicity = _day(f"{r}.publicity_end + INTERVAL 1 DAY")
    return f"least({after_publicity}, {r}.repaired_on, {r}.withdrawn_on)"


def penalty_repairable_from(r: str = "r") -> str:
    """The earliest day credit repair can end the publicity: 6 months after publication
    (a year in food, drugs, special equipment); NULL for the kinds never repairable."""
    fields = ", ".join(f"'{v}'" for v in SENSITIVE_VIOLATIONS)
    months = (
        f"CASE WHEN {r}.violation_type IN ({fields}) THEN {REPAIR_AFTER_MONTHS_SENSITIVE} "
        f"ELSE {REPAIR_AFTER_MONTHS} END"
    )
    return (
        f"(CASE WHEN {never_repairable(f'{r}.penalty_kinds')} THEN NULL "
        f"ELSE {_day(f'{r}.published_on + to_months({months})')} END)"
    )


def abnormal_stops_counting(r: str = "r") -> str:
    """A marking counts until restored: no date but the restoration's."""
    return f"{r}.restored_on"


def serious_stops_counting(r: str = "r") -> str:
    """Its removal: recorded, or 3 years after the listing as the rule requires."""
    return f"COALESCE({r}.removed_on, {first_day_outside(f'{r}.listed_on', SERIOUS_LIST_YEARS)})"


def serious_removable_from(r: str = "r") -> str:
    """The earliest day early removal can be granted: a year after the listing."""
    return first_day_outside(f"{r}.listed_on", SERIOUS_EARLY_REMOVAL_YEARS)


def spot_check_stops_counting(r: str = "r") -> str:
    """3 years after the result's publication (:func:`spot_check_usable`)."""
    return first_day_outside(f"{r}.published_on", SPOT_CHECK_YEARS)
