"""A slow, obviously-correct reference for the point-in-time features and labels.

Plain Python over one household at a time, written from DOMAIN.md §3 and the catalogue's
descriptions, sharing no code with the SQL in ``features.pit`` (only the catalogue's list
of names and the city lookup).
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd
from dateutil.relativedelta import relativedelta

from features.catalogue import FEATURE_NAMES
from records.geography import city_of_division
from records.schema import TABLES

LOW_FINE = 3000


def load_tables(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, list[dict]]]:
    """Every record table as {uscc: [row dicts]} (households: {uscc: row})."""
    out: dict = {}
    for t in TABLES:
        rel = con.sql(f'SELECT * FROM "{t.name}"')
        cols = rel.columns
        groups: dict[str, list[dict]] = {}
        for row in rel.fetchall():
            r = dict(zip(cols, row, strict=True))
            groups.setdefault(r["uscc"], []).append(r)
        out[t.name] = groups
    return out


def _minor(p: dict) -> bool:
    kinds = p["penalty_kinds"].split(";")
    return (
        all(k in ("public_criticism", "fine") for k in kinds) and (p["fine_yuan"] or 0) <= LOW_FINE
    )


def _severity(p: dict) -> int:
    k = p["penalty_kinds"]
    if "licence_revocation" in k or "practice_ban" in k:
        return 4
    if "suspension_order" in k or "licence_suspension" in k or "business_restriction" in k:
        return 3
    if (p["fine_yuan"] or 0) >= 100_000:
        return 3
    return 1 if _minor(p) else 2


def _usable_penalty(p: dict, t: date) -> bool:
    if p["published_on"] is None or p["procedure"] != "ordinary" or p["penalty_kinds"] == "warning":
        return False
    if p["published_on"] > t or t > p["publicity_end"]:
        return False
    if p["repaired_on"] is not None and p["repaired_on"] <= t:
        return False
    return not (p["withdrawn_on"] is not None and p["withdrawn_on"] <= t)


def operating_on(h: dict, changes: list[dict], t: date) -> bool:
    if h["registered_on"] > t:
        return False
    status_changes = sorted(
        (c for c in changes if c["change_type"] == "status" and c["changed_on"] <= t),
        key=lambda c: c["changed_on"],
    )
    if status_changes:
        return status_changes[-1]["new_status"] == "operating"
    if h["status_changed_on"] is not None and h["status_changed_on"] <= t:
        return h["status"] == "operating"
    return True


def household_features(tables: dict, uscc: str, t: date) -> dict:
    h = tables["households"][uscc][0]
    changes = tables["registration_changes"].get(uscc, [])
    reports = {r["report_year"]: r for r in tables["annual_reports"].get(uscc, [])}
    f: dict = {"uscc": uscc, "as_of": t}
    f["reg_age_years"] = (t - h["registered_on"]).days / 365.25
    f["org_form_family"] = int(h["org_form"] == "family")
    f["industry"] = h["industry"]
    city = city_of_division(h["division_code"])
    f["city"] = city.name_en if city else "other"

    for kind in ("operator", "address"):
        for years in (1, 2):
            since = t - relativedelta(years=years)
            f[f"{kind}_changes_{years}y"] = sum(
                1 for c in changes if c["change_type"] == kind and since < c["changed_on"] <= t
            )

    def filed_by_t(year: int):
        r = reports.get(year)
        return r["filed_on"] if r and r["filed_on"] is not None and r["filed_on"] <= t else None

    # a report for year Y is on time to 30 June of Y+1 and overdue from 1 July
    last = t.year - 1 if t > date(t.year, 6, 30) else t.year - 2
    reg_year = h["registered_on"].year
    due = [y for y in (last - 2, last - 1, last) if y >= reg_year]
    on_time = {y: (d := filed_by_t(y)) is not None and d <= date(y + 1, 6, 30) for y in due}
    late = {y: (d := filed_by_t(y)) is not None and d > date(y + 1, 6, 30) for y in due}
    f["last_report_late"] = int(last in due and late[last])
    f["last_report_missing"] = int(last in due and filed_by_t(last) is None)
    marks_now = [
        a
        for a in tables["abnormal_status"].get(uscc, [])
        if a["marked_on"] <= t and (a["restored_on"] is None or a["restored_on"] > t)
    ]
    marked_for_last = any(
        a["cause"] == "report_not_filed" and a["marked_on"] > date(last + 1, 6, 30)
        for a in marks_now
    )
    f["report_marking_pending"] = int(f["last_report_missing"] == 1 and not marked_for_last)
    f["reports_missing_3y"] = sum(1 for y in due if not on_time[y])
    this = t.year - 1
    period_open = t <= date(t.year, 6, 30)
    unfiled = period_open and reg_year <= this and filed_by_t(this) is None
    f["open_report_unfiled_days"] = min((t - date(t.year - 1, 12, 31)).days, 181) if unfiled else 0
    cycle_start = date(t.year if t > date(t.year, 7, 31) else t.year - 1, 7, 31)
    f["reporting_cycle_day"] = (t - cycle_start).days
    published = [
        r
        for r in reports.values()
        if r["report_year"] >= last - 2
        and r["published"]
        and filed_by_t(r["report_year"]) is not None
    ]
    f["reported_employees"] = (
        float(max(published, key=lambda r: r["report_year"])["employees"])
        if published
        else float("nan")
    )

    marks = [
        a
        for a in tables["abnormal_status"].get(uscc, [])
        if a["marked_on"] <= t and (a["restored_on"] is None or a["restored_on"] > t)
    ]
    f["abnormal_now_report"] = int(
        any(a["cause"] in ("report_not_filed", "report_false") for a in marks)
    )
    f["abnormal_now_unreachable"] = int(any(a["cause"] == "unreachable" for a in marks))
    f["abnormal_days"] = (t - min(a["marked_on"] for a in marks)).days if marks else 0

    pens = [p for p in tables["penalties"].get(uscc, []) if _usable_penalty(p, t)]
    one, three = t - relativedelta(years=1), t - relativedelta(years=3)
    f["penalties_1y"] = sum(1 for p in pens if p["published_on"] > one)
    f["penalties_3y"] = sum(1 for p in pens if p["published_on"] > three)
    f["penalty_fines_yuan"] = float(sum(p["fine_yuan"] or 0 for p in pens))
    f["penalty_max_severity"] = max((_severity(p) for p in pens), default=0)
    f["penalty_recency_days"] = (
        min(1095, (t - max(p["published_on"] for p in pens)).days) if pens else 1095
    )
    f["penalty_violation_types"] = len({p["violation_type"] for p in pens})

    f["serious_listed"] = int(
        any(
            s["listed_on"] <= t and (s["removed_on"] is None or s["removed_on"] > t)
            for s in tables["serious_dishonesty"].get(uscc, [])
        )
    )
    f["spot_problems_3y"] = sum(
        1
        for s in tables["spot_checks"].get(uscc, [])
        if three < s["published_on"] <= t and s["result"] != "normal"
    )
    return f


def household_label(tables: dict, uscc: str, t: date, horizon_months: int = 12) -> int:
    end = t + relativedelta(months=horizon_months)
    events = []
    for p in tables["penalties"].get(uscc, []):
        if (
            p["published_on"] is not None
            and p["procedure"] == "ordinary"
            and p["penalty_kinds"] != "warning"
            and not _minor(p)
        ):
            events.append(p["published_on"])
    events += [a["marked_on"] for a in tables["abnormal_status"].get(uscc, [])]
    events += [s["listed_on"] for s in tables["serious_dishonesty"].get(uscc, [])]
    for c in tables["registration_changes"].get(uscc, []):
        if c["change_type"] == "status" and (
            c["new_status"] == "revoked"
            or (c["new_status"] == "deregistered" and c["reason"] == "authority_initiated")
        ):
            events.append(c["changed_on"])
    return int(any(t < d <= end for d in events))


def reference(con: duckdb.DuckDBPyConnection, t: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and labels for every household operating on ``t``, sorted by USCC."""
    tables = load_tables(con)
    feats, labels = [], []
    for uscc in sorted(tables["households"]):
        h = tables["households"][uscc][0]
        if not operating_on(h, tables["registration_changes"].get(uscc, []), t):
            continue
        feats.append(household_features(tables, uscc, t))
        labels.append({"uscc": uscc, "as_of": t, "label": household_label(tables, uscc, t)})
    return pd.DataFrame(feats, columns=["uscc", "as_of", *FEATURE_NAMES]), pd.DataFrame(labels)
