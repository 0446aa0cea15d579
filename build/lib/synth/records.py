"""Turn simulated events into the regulator's record tables (``records.schema``).

Every rule of ``../shared/DOMAIN.md`` §2 that concerns dates is applied here:
penalties are published after their decision, publicity ends after 3 months (public
criticism or a low fine) or 3 years, repair only after 6 months (1 year for food, drugs,
special equipment) and never for suspension or revocation, serious listing only with a
heavy penalty, abnormal markings for a missing report only in July after the 30 June
deadline, and no record after a household ends (restorations and late filings that
would fall after it are not made).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from records.geography import CITIES
from records.policy import LOW_FINE_YUAN
from records.schema import (
    ABNORMAL_STATUS,
    ANNUAL_REPORTS,
    INDUSTRIES,
    PENALTIES,
    REGISTRATION_CHANGES,
    SERIOUS_DISHONESTY,
    SPOT_CHECKS,
    VIOLATION_TYPES,
    Table,
    arrow_schema,
)
from synth.process import (
    EXIT_AUTHORITY,
    EXIT_REVOKED,
    EXIT_VOLUNTARY,
    K,
    Simulated,
)

NO_DATE = np.iinfo(np.int64).max
REPAIR_SHARE = 0.35  # [assumption]
WITHDRAW_SHARE = 0.02  # [assumption]
_SLOW_REPAIR = {"food_safety", "drug_safety", "special_equipment"}


def _violation_matrix() -> np.ndarray:
    base = {
        "unlicensed_operation": 0.10,
        "food_safety": 0.05,
        "special_equipment": 0.02,
        "product_quality": 0.20,
        "pricing": 0.15,
        "advertising": 0.12,
        "trademark": 0.08,
        "measurement": 0.08,
        "consumer_rights": 0.12,
        "registration": 0.05,
        "other": 0.03,
    }
    special = {
        "H": {
            "food_safety": 0.6,
            "pricing": 0.1,
            "unlicensed_operation": 0.1,
            "consumer_rights": 0.1,
            "advertising": 0.05,
            "other": 0.05,
        },
        "F": {
            "food_safety": 0.2,
            "drug_safety": 0.05,
            "product_quality": 0.2,
            "pricing": 0.15,
            "trademark": 0.1,
            "measurement": 0.1,
            "advertising": 0.1,
            "consumer_rights": 0.1,
        },
    }
    rows = []
    for ind in INDUSTRIES:
        d = special.get(ind, base)
        rows.append([d.get(v, 0.0) for v in VIOLATION_TYPES])
    m = np.array(rows)
    return m / m.sum(axis=1, keepdims=True)


VIOLATION_P = _violation_matrix()


def add_months(day: np.ndarray, months: int) -> np.ndarray:
    """Same day-of-month ``months`` later (clipped to month end), as days since 1970."""
    d = day.astype("datetime64[D]")
    m = d.astype("datetime64[M]")
    dom = (d - m.astype("datetime64[D]")).astype(np.int64)
    target = (m + months).astype("datetime64[D]")
    month_len = ((m + months + 1).astype("datetime64[D]") - target).astype(np.int64)
    return (target.astype(np.int64) + np.minimum(dom, month_len - 1)).astype(np.int64)


def nudge_unique(
    keys: list[np.ndarray], day: np.ndarray, hi: np.ndarray | None = None
) -> np.ndarray:
    """Move same-key same-day duplicates to a neighbouring day of the same month.

    Natural keys hold a date; two records of one kind on one day for one household would
    collide. Staying inside the month (and on or before ``hi``) keeps the process's
    monthly statistics and the household's end intact.
    """
    day = day.copy()
    hi = np.full(len(day), NO_DATE) if hi is None else hi
    for _ in range(400):
        order = np.lexsort((day, *keys[::-1]))
        same = np.ones(max(len(day) - 1, 0), dtype=bool)
        for k in keys:
            same &= k[order][1:] == k[order][:-1]
        same &= day[order][1:] == day[order][:-1]
        if not same.any():
            return day
        dup = order[1:][same]
        d = day[dup].astype("datetime64[D]")
        first = d.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        last = np.minimum(
            (d.astype("datetime64[M]") + 1).astype("datetime64[D]").astype(np.int64) - 1, hi[dup]
        )
        # Step forward, wrapping round inside the allowed days of the month.
        cand = day[dup] + 1
        day[dup] = np.where(cand > last, first, cand)
    raise RuntimeError("could not make natural keys unique")


def _lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values`` at the (unique) ``keys`` equal to each wanted key; NO_DATE where absent."""
    if len(keys) == 0:
        return np.full(len(wanted), NO_DATE)
    order = np.argsort(keys)
    hit = order[np.minimum(np.searchsorted(keys, wanted, sorter=order), len(keys) - 1)]
    return np.where(keys[hit] == wanted, values[hit], NO_DATE)


def _dates(day: np.ndarray) -> pa.Array:
    mask = (day == NO_DATE) | (day < 0)
    return pa.array(np.where(mask, 0, day).astype("int32"), type=pa.int32(), mask=mask).cast(
        pa.date32()
    )


def _table(t: Table, cols: dict) -> pa.Table:
    schema = arrow_schema(t)
    arrays = []
    for f in schema:
        v = cols[f.name]
        if isinstance(v, pa.Array | pa.ChunkedArray):
            arrays.append(v.cast(f.type))
        elif f.type == pa.date32():
            arrays.append(_dates(np.asarray(v)))
        else:
            arrays.append(pa.array(v, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _later(
    start: np.ndarray, rng: np.random.Generator, min_days: int, mean_days: float
) -> np.ndarray:
    return start + min_days + np.floor(rng.exponential(mean_days, len(start))).astype(np.int64)


def build_records(
    sim: Simulated,
    uscc: np.ndarray,
    reg_day: np.ndarray,
    industry: np.ndarray,
    city: np.ndarray,
    chunk: int,
    end_day: int,
    rng: np.random.Generator,
) -> dict[str, pa.Table]:
    """Record tables (all but ``households``) for one simulated chunk. The helpers draw
    from ``rng`` in a fixed order, so the output depends on the seed only."""
    limit = np.where(sim.exit_day >= 0, sim.exit_day, end_day)  # last day records can happen
    reports, mark_late = _reports(sim, uscc, limit, rng)
    abnormal = _abnormal(sim, uscc, mark_late, limit, rng)
    penalties, serious = _penalties(sim, uscc, reg_day, industry, city, chunk, end_day, limit, rng)
    changes = _changes(sim, uscc, reg_day, end_day, limit, rng)
    spots = _spot_checks(sim, uscc, reg_day, end_day, limit, rng)
    return {
        "registration_changes": changes,
        "annual_reports": reports,
        "abnormal_status": abnormal,
        "penalties": penalties,
        "serious_dishonesty": serious,
        "spot_checks": spots,
    }


def _within(limit: np.ndarray, h: np.ndarray, d: np.ndarray) -> np.ndarray:
    """A date, or none if it falls after the household's last day of records."""
    return np.where(d <= limit[h], d, NO_DATE)


def _reports(sim: Simulated, uscc, limit, rng) -> tuple[pa.Table, np.ndarray]:
    """Annual reports; half of the households marked for a missing report file it later,
    and that date (returned too) restores the marking and goes on the report row."""
    files_late = rng.random(len(sim.mark_hh)) < 0.5
    late_day = _within(limit, sim.mark_hh, _later(sim.mark_day, rng, 20, 100.0))
    mark_late = np.where(files_late, late_day, NO_DATE)
    rep_late = _lookup(
        sim.mark_hh * 10_000 + sim.mark_year, mark_late, sim.rep_hh * 10_000 + sim.rep_year
    )
    filed = np.where(sim.rep_filed_day >= 0, sim.rep_filed_day, rep_late)
    has_filed = filed != NO_DATE
    n_rep = len(sim.rep_hh)
    published = has_filed & (rng.random(n_rep) < 0.85)
    revenue = np.round(rng.lognormal(np.log(245_800), 1.0, n_rep), -2)
    reports = _table(
        ANNUAL_REPORTS,
        {
            "uscc": uscc[sim.rep_hh],
            "report_year": sim.rep_year.astype(np.int32),
            "filed_on": filed,
            "published": published,
            "employees": pa.array(1 + rng.poisson(1.5, n_rep), mask=~has_filed, type=pa.int32()),
            "revenue_yuan": pa.array(revenue, mask=~has_filed),
            "has_online_shop": pa.array(rng.random(n_rep) < 0.2, mask=~has_filed),
        },
    )
    return reports, mark_late


def _abnormal(sim: Simulated, uscc, mark_late, limit, rng) -> pa.Table:
    """Markings: missing reports (restored when filed late), unreachable and false-report
    markings from the risk process, each restored for a share of households."""
    kind, hh, day = sim.ev_kind, sim.ev_hh, sim.ev_day
    unr = kind == K["marking_unreachable"]
    fal = kind == K["marking_false_report"]
    a_hh = np.concatenate([sim.mark_hh, hh[unr], hh[fal]])
    a_day = np.concatenate([sim.mark_day, day[unr], day[fal]])
    a_cause = np.concatenate(
        [
            np.full(len(sim.mark_hh), "report_not_filed"),
            np.full(int(unr.sum()), "unreachable"),
            np.full(int(fal.sum()), "report_false"),
        ]
    ).astype(object)
    restore_unr = np.where(
        rng.random(int(unr.sum())) < 0.5,
        _within(limit, hh[unr], _later(day[unr], rng, 30, 150.0)),
        NO_DATE,
    )
    restore_fal = np.where(
        rng.random(int(fal.sum())) < 0.6,
        _within(limit, hh[fal], _later(day[fal], rng, 30, 90.0)),
        NO_DATE,
    )
    a_restore = np.concatenate([mark_late, restore_unr, restore_fal])
    a_reason = np.concatenate(
        [
            np.full(len(sim.mark_hh), "report_filed"),
            np.full(int(unr.sum()), "address_registered"),
            np.full(int(fal.sum()), "report_corrected"),
        ]
    ).astype(object)
    a_day = nudge_unique([a_hh, np.unique(a_cause, return_inverse=True)[1]], a_day, limit[a_hh])
    a_restore = np.where(a_restore == NO_DATE, NO_DATE, np.maximum(a_restore, a_day))
    return _table(
        ABNORMAL_STATUS,
        {
            "uscc": uscc[a_hh],
            "marked_on": a_day,
            "cause": a_cause,
            "restored_on": a_restore,
            "restore_reason": pa.array(a_reason, pa.string(), mask=a_restore == NO_DATE),
        },
    )


def _penalties(sim, uscc, reg_day, industry, city, chunk, end_day, limit, rng):
    """Penalty records and the serious-list entries the heavy ones cause. The random draws
    keep one fixed order across the helpers below, so the output depends on the seed only."""
    kind, hh, day = sim.ev_kind, sim.ev_hh, sim.ev_day
    is_pen = np.isin(
        kind,
        [K["penalty_minor"], K["penalty_standard"], K["penalty_heavy"], K["penalty_revocation"]],
    )
    p_hh, p_pub, p_kind = hh[is_pen], day[is_pen], kind[is_pen]
    w_hh, w_day = _unpublished(reg_day, limit, len(uscc), rng)
    n_pub, n_w = len(p_hh), len(w_hh)
    all_hh = np.concatenate([p_hh, w_hh])
    viol = _choice_rows(rng, VIOLATION_P[industry[all_hh]])
    v_name = np.array(VIOLATION_TYPES, dtype=object)[viol]
    group = {
        name: np.concatenate([p_kind == K[f"penalty_{name}"], np.zeros(n_w, bool)])
        for name in ("minor", "standard", "heavy", "revocation")
    }
    group["warn"] = np.concatenate([np.zeros(n_pub, bool), np.ones(n_w, bool)])
    kinds, fine = _kinds_and_fines(group, rng)
    procedure = np.where(group["warn"] & (kinds != "warning"), "simple", "ordinary").astype(object)
    published = np.concatenate([p_pub, np.full(n_w, NO_DATE)])
    base = np.concatenate([p_pub, w_day])
    dates = _penalty_dates(group, published, base, reg_day[all_hh], v_name, end_day, rng)
    year = base.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    prefix = np.array([c.name_zh[0] + "市监罚" for c in CITIES], dtype=object)[city[all_hh]]
    decision_no = [
        f"{p}〔{y}〕{chunk:04d}{s:07d}号"
        for p, y, s in zip(prefix, year.tolist(), range(len(all_hh)), strict=True)
    ]
    penalties = _table(
        PENALTIES,
        {
            "uscc": uscc[all_hh],
            "decision_no": decision_no,
            "procedure": procedure,
            "published_on": published,
            "violation_type": v_name,
            "penalty_kinds": kinds,
            "fine_yuan": fine,
            **dates,
        },
    )
    listed = group["heavy"] | group["revocation"]
    serious = _serious_list(
        all_hh[listed],
        published[listed],
        group["revocation"][listed],
        kinds[listed],
        uscc,
        end_day,
        rng,
    )
    return penalties, serious


def _unpublished(reg_day, limit, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Warnings alone and simple-procedure decisions (never published), independent of Z."""
    years_open = (
        limit - np.maximum(reg_day, np.datetime64("2019-01-01").astype(np.int64))
    ) / 365.25
    n_warn = rng.poisson(0.03 * np.maximum(years_open, 0))
    w_hh = np.repeat(np.arange(n), n_warn)
    lo = np.maximum(reg_day[w_hh], np.datetime64("2019-01-01").astype(np.int64))
    w_day = lo + np.floor(rng.random(len(w_hh)) * np.maximum(limit[w_hh] - lo, 1)).astype(np.int64)
    return w_hh, w_day


def _kinds_and_fines(group: dict, rng) -> tuple[np.ndarray, np.ndarray]:
    """Penalty kinds and fines per group (minor, standard, heavy, revocation, warn)."""
    minor, std, heavy, revoke, warn = (
        group[k] for k in ("minor", "standard", "heavy", "revocation", "warn")
    )
    n_all, n_w = len(minor), int(warn.sum())
    kinds = np.empty(n_all, dtype=object)
    fine = np.zeros(n_all)
    r = rng.random(n_all)
    kinds[minor] = np.where(r[minor] < 0.4, "public_criticism", "fine")
    fine[minor] = np.where(
        r[minor] < 0.4, 0, np.round(200 + rng.random(int(minor.sum())) * (LOW_FINE_YUAN - 200), -2)
    )
    kinds[std] = np.where(
        r[std] < 0.7, "fine", np.where(r[std] < 0.95, "fine;confiscation", "confiscation")
    )
    fine[std] = np.where(
        kinds[std] == "confiscation",
        0,
        np.clip(
            np.round(rng.lognormal(np.log(8000), 0.8, int(std.sum())), -2),
            LOW_FINE_YUAN + 100,  # above the low-fine threshold: 3 years of publicity
            100_000,
        ),
    )
    heavy_kinds = np.array(
        ["fine", "fine;suspension_order", "fine;licence_suspension", "fine;business_restriction"],
        dtype=object,
    )
    kinds[heavy] = heavy_kinds[np.floor(r[heavy] * 4).astype(int)]
    fine[heavy] = np.round(100_000 + rng.random(int(heavy.sum())) * 400_000, -3)
    kinds[revoke] = np.where(r[revoke] < 0.5, "licence_revocation", "fine;licence_revocation")
    fine[revoke] = np.where(
        r[revoke] < 0.5, 0, np.round(20_000 + rng.random(int(revoke.sum())) * 80_000, -3)
    )
    kinds[warn] = np.where(r[warn] < 0.5, "warning", "fine")
    fine[warn] = np.where(r[warn] < 0.5, 0, np.round(50 + rng.random(n_w) * 150, -1))
    return kinds, fine


def _penalty_dates(group, published, base, reg_day, v_name, end_day, rng) -> dict:
    """Decision date, publicity end, repair (standard penalties only, after the minimum
    period) and withdrawal, under SAMR Order 45."""
    warn, minor, std = group["warn"], group["minor"], group["standard"]
    n_all = len(warn)
    decided = np.maximum(base - rng.integers(1, 29, n_all), reg_day)
    decided = np.where(warn, base, decided)
    pub = ~warn
    end3m = add_months(np.where(pub, published, 0), 3) - 1
    end3y = add_months(np.where(pub, published, 0), 36) - 1
    publicity_end = np.where(pub, np.where(minor, end3m, end3y), NO_DATE)
    slow = np.isin(v_name, list(_SLOW_REPAIR))
    earliest = np.where(
        slow,
        add_months(np.where(pub, published, 0), 12),
        add_months(np.where(pub, published, 0), 6),
    )
    repair_day = earliest + np.floor(rng.exponential(120.0, n_all)).astype(np.int64)
    repairable = std & (rng.random(n_all) < REPAIR_SHARE)
    repaired = np.where(
        repairable & (repair_day < publicity_end) & (repair_day <= end_day), repair_day, NO_DATE
    )
    withdraw_day = np.where(pub, published, 0) + rng.integers(5, 61, n_all)
    withdrawn = np.where(
        pub
        & (rng.random(n_all) < WITHDRAW_SHARE)
        & (withdraw_day <= end_day)
        & (repaired == NO_DATE),
        withdraw_day,
        NO_DATE,
    )
    return {
        "decided_on": decided,
        "publicity_end": publicity_end,
        "repaired_on": repaired,
        "withdrawn_on": withdrawn,
    }


def _serious_list(s_hh, s_day, revoked, kinds, uscc, end_day, rng):
    """Every heavy or revocation penalty lists the household the day it is published (two
    heavy penalties on one day make one listing); early removal after a year for 30%."""
    reason = np.where(
        revoked,
        "licence_revoked",
        np.where(
            np.char.find(kinds.astype(str), "suspension_order") >= 0,
            "closure_ordered",
            "heavy_fine",
        ),
    ).astype(object)
    _, first = np.unique(s_hh * 100_000 + s_day, return_index=True)
    s_hh, s_day, reason = s_hh[first], s_day[first], reason[first]
    early = rng.random(len(s_hh)) < 0.3
    removed = np.where(early, _later(add_months(s_day, 12), rng, 0, 90.0), add_months(s_day, 36))
    removed = np.where(removed <= end_day, removed, NO_DATE)
    return _table(
        SERIOUS_DISHONESTY,
        {"uscc": uscc[s_hh], "listed_on": s_day, "reason": reason, "removed_on": removed},
    )


def _choice_rows(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One categorical draw per row of probability matrix ``p``."""
    c = p.cumsum(axis=1)
    u = rng.random((len(p), 1))
    return np.minimum((u > c).sum(axis=1), p.shape[1] - 1)


def _poisson_days(rng, rate_per_year, reg_day, limit):
    lo = np.maximum(reg_day, np.datetime64("2019-01-01").astype(np.int64)) + 1
    years = np.maximum(limit - lo, 0) / 365.25
    n = rng.poisson(rate_per_year * years)
    hh = np.repeat(np.arange(len(reg_day)), n)
    d = lo[hh] + np.floor(rng.random(len(hh)) * np.maximum(limit[hh] - lo[hh], 1)).astype(np.int64)
    return hh, d


def _changes(sim, uscc, reg_day, end_day, limit, rng):
    kind, hh, day = sim.ev_kind, sim.ev_hh, sim.ev_day
    addr = kind == K["address_change"]
    op_hh, op_day = _poisson_days(rng, 0.03, reg_day, limit)
    nm_hh, nm_day = _poisson_days(rng, 0.01, reg_day, limit)
    ex = np.flatnonzero(sim.exit_day >= 0)
    c_hh = np.concatenate([hh[addr], op_hh, nm_hh, ex])
    c_day = np.concatenate([day[addr], op_day, nm_day, sim.exit_day[ex]])
    c_type = np.concatenate(
        [
            np.full(int(addr.sum()), "address"),
            np.full(len(op_hh), "operator"),
            np.full(len(nm_hh), "name"),
            np.full(len(ex), "status"),
        ]
    ).astype(object)
    ek = sim.exit_kind[ex]
    new_status = np.concatenate(
        [
            np.full(len(c_hh) - len(ex), None, dtype=object),
            np.where(ek == EXIT_REVOKED, "revoked", "deregistered").astype(object),
        ]
    )
    reason = np.concatenate(
        [
            np.full(len(c_hh) - len(ex), None, dtype=object),
            np.select(
                [ek == EXIT_VOLUNTARY, ek == EXIT_AUTHORITY, ek == EXIT_REVOKED],
                ["voluntary", "authority_initiated", "licence_revoked"],
                "voluntary",
            ).astype(object),
        ]
    )
    type_code = np.unique(c_type, return_inverse=True)[1]
    # Status changes are unique per household; never move them (their day is the exit).
    movable = c_type != "status"
    c_day = np.where(movable, nudge_unique([c_hh, type_code], c_day, limit[c_hh]), c_day)
    return _table(
        REGISTRATION_CHANGES,
        {
            "uscc": uscc[c_hh],
            "change_type": c_type,
            "changed_on": c_day,
            "new_status": new_status,
            "reason": reason,
        },
    )


def _spot_checks(sim, uscc, reg_day, end_day, limit, rng):
    kind, hh, day = sim.ev_kind, sim.ev_hh, sim.ev_day
    prob = kind == K["spot_problem"]
    n_hh, n_check = _poisson_days(rng, 0.08, reg_day, limit)
    pr_pub = day[prob]
    pr_check = np.maximum(pr_pub - rng.integers(3, 21, int(prob.sum())), reg_day[hh[prob]])
    n_pub = n_check + rng.integers(3, 21, len(n_hh))
    keep = n_pub <= end_day
    n_hh, n_check, n_pub = n_hh[keep], n_check[keep], n_pub[keep]
    results = np.array(["not_publicised", "unreachable", "problems_corrected"], dtype=object)
    s_hh = np.concatenate([hh[prob], n_hh])
    s_check = np.concatenate([pr_check, n_check])
    s_pub = np.concatenate([pr_pub, n_pub])
    s_res = np.concatenate(
        [
            results[_choice_rows(rng, np.tile([0.3, 0.3, 0.4], (int(prob.sum()), 1)))],
            np.full(len(n_hh), "normal", dtype=object),
        ]
    )
    # Only the check date is part of the key; normal checks give way to problem ones.
    s_check = nudge_unique([s_hh], s_check, s_pub)
    return _table(
        SPOT_CHECKS,
        {"uscc": uscc[s_hh], "checked_on": s_check, "published_on": s_pub, "result": s_res},
    )
