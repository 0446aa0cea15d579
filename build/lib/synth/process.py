"""Monthly simulation of the known risk process for one chunk of households.

The loop keeps two kinds of state apart: the frailty ``z`` (drawn once, used only to
draw Z-events) and the observable state (counts, integrated baseline, adverse history),
from which :func:`synth.risk.oracle_pd` computes the oracle at each requested
as-of month. Ordering inside a month: January report decisions, July markings, Z-events
on uniform days, then voluntary exits at month end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.risk import ObservedState, RiskParams, month_start_day, oracle_pd

# Z-event kinds. Adverse ones first; the split is by industry-independent shares.
ADVERSE_KINDS = (
    "penalty_standard",
    "marking_unreachable",
    "marking_false_report",
    "penalty_heavy",
    "penalty_revocation",
    "forced_deregistration",
)
ADVERSE_SHARES = np.array([0.45, 0.35, 0.05, 0.08, 0.03, 0.04])
BENIGN_KINDS = ("penalty_minor", "address_change", "spot_problem")
BENIGN_SHARES = np.array([0.45, 0.35, 0.20])
ZKINDS = ADVERSE_KINDS + BENIGN_KINDS
K = {name: i for i, name in enumerate(ZKINDS)}
TERMINAL = (K["penalty_revocation"], K["forced_deregistration"])

EXIT_NONE, EXIT_VOLUNTARY, EXIT_AUTHORITY, EXIT_REVOKED = 0, 1, 2, 3


@dataclass
class Population:
    """Static attributes of a chunk of households (before any record is drawn)."""

    industry: np.ndarray  # int8 index into schema.INDUSTRIES
    city: np.ndarray  # int8 index into geography.CITIES
    registered_day: np.ndarray  # int64 days since 1970-01-01
    z: np.ndarray  # frailty; truth only


@dataclass
class Simulated:
    """Everything the records and the truth file are built from."""

    ev_hh: np.ndarray
    ev_day: np.ndarray
    ev_kind: np.ndarray
    mark_hh: np.ndarray  # July markings for missing reports
    mark_day: np.ndarray
    mark_year: np.ndarray
    rep_hh: np.ndarray  # annual reports that exist in the records
    rep_year: np.ndarray
    rep_filed_day: np.ndarray  # -1: not filed by 30 June
    exit_day: np.ndarray  # -1: still operating at the end
    exit_kind: np.ndarray
    oracle_hh: np.ndarray
    oracle_month: np.ndarray
    oracle_pd: np.ndarray
    oracle_outcome: np.ndarray  # 1/0, -1 if the window runs past the end


def simulate(
    pop: Population,
    params: RiskParams,
    n_months: int,
    oracle_months: list[int],
    rng: np.random.Generator,
    horizon: int = 12,
) -> Simulated:
    """Run the monthly process from January 2019 for ``n_months`` months.

    One loop over months, longer than the house's functions on purpose: each month's
    hazards depend on the state every earlier step left (exits, markings, reports, the
    penalty history), and the draws must come in one fixed order for the domain to depend
    on the seed alone. Cut into helpers, the state would travel through a dozen arguments
    and the order of the draws would be far harder to see."""
    n = len(pop.z)
    ind, city, reg_day, z = pop.industry, pop.city, pop.registered_day, pop.z
    starts = month_start_day(np.arange(n_months + 1))
    reg_month = np.searchsorted(starts, reg_day, side="right") - 1  # -1: before 2019

    alive = np.ones(n, dtype=bool)
    exit_day = np.full(n, -1, dtype=np.int64)
    exit_kind = np.zeros(n, dtype=np.int8)
    ring = np.zeros((n, 24), dtype=np.int16)
    n_events = np.zeros(n, dtype=np.int64)
    exposure = np.zeros(n, dtype=np.float64)
    jan_q = np.full(n, np.nan)
    due = np.zeros(n, dtype=bool)
    missing = np.zeros(n, dtype=bool)
    filed_day = np.full(n, -1, dtype=np.int64)

    ev: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    marks: list[tuple[np.ndarray, np.ndarray, int]] = []
    reps: list[tuple[np.ndarray, int, np.ndarray]] = []
    orc: list[tuple[np.ndarray, int, np.ndarray]] = []
    pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # month -> (hh, hit)
    outcomes: list[np.ndarray] = []

    adv_p = params.adverse_share[ind]
    for m in range(n_months):
        ms, me = starts[m], starts[m + 1] - 1
        n24 = ring.sum(axis=1)
        adverse_now = np.zeros(n, dtype=np.int16)

        if m % 12 == 0:  # January: decide this year's report (for last year)
            elig = alive & (reg_day < ms)
            e_idx = np.flatnonzero(elig)
            q = params.missing_prob(ind[e_idx], (ms - reg_day[e_idx]) / 365.25, n24[e_idx])
            jan_q[:] = np.nan
            jan_q[e_idx] = q
            due[:] = elig
            missing[:] = False
            missing[e_idx] = rng.random(len(e_idx)) < q
            filed_day[:] = -1
            files = elig & ~missing
            # Filing runs to 30 June, even past the end of the history.
            window = int(month_start_day(np.array([m + 6]))[0]) - ms
            filed_day[files] = ms + rng.integers(0, window, size=int(files.sum()))

        mark_day_now = np.full(n, np.iinfo(np.int64).max)
        if m % 12 == 6 and m >= 6:  # July: mark missing reports, settle the report rows
            mk = np.flatnonzero(due & missing & alive)
            mark_day_now[mk] = ms + rng.integers(0, 15, size=len(mk))
            keep_rep = due & (alive | ((filed_day >= 0) & (filed_day <= exit_day)))
            r_idx = np.flatnonzero(keep_rep)
            reps.append((r_idx, m // 12 + 2019 - 1, filed_day[r_idx].copy()))

        active = alive & (reg_month < m)
        a_idx = np.flatnonzero(active)
        age = (ms - reg_day[a_idx]) / 365.25
        b = params.intensity(ind[a_idx], city[a_idx], age, m, n24[a_idx])
        exposure[a_idx] += b / 12.0
        counts = rng.poisson(z[a_idx] * b / 12.0)
        hit = counts > 0
        e_hh = np.repeat(a_idx[hit], counts[hit])
        if len(e_hh):
            adverse = rng.random(len(e_hh)) < adv_p[e_hh]
            kind = np.where(
                adverse,
                rng.choice(len(ADVERSE_KINDS), size=len(e_hh), p=ADVERSE_SHARES),
                len(ADVERSE_KINDS) + rng.choice(len(BENIGN_KINDS), size=len(e_hh), p=BENIGN_SHARES),
            ).astype(np.int8)
            day = ms + rng.integers(0, me - ms + 1, size=len(e_hh))
            # A terminal event ends the household: later events (and same-day ones) of
            # the month never happen. Only the first terminal event is kept.
            term = np.isin(kind, TERMINAL)
            end_day = np.full(n, np.iinfo(np.int64).max)
            np.minimum.at(end_day, e_hh[term], day[term])
            keep = day < end_day[e_hh]
            firsts = np.flatnonzero(term & (day == end_day[e_hh]))
            _, first = np.unique(e_hh[firsts], return_index=True)
            keep[firsts[first]] = True
            e_hh, kind, day = e_hh[keep], kind[keep], day[keep]
            ev.append((e_hh, day, kind))
            np.add.at(n_events, e_hh, 1)
            is_adv = kind < len(ADVERSE_KINDS)
            np.add.at(adverse_now, e_hh[is_adv], 1)
            t_hh = e_hh[np.isin(kind, TERMINAL)]
            t_day = day[np.isin(kind, TERMINAL)]
            t_kind = kind[np.isin(kind, TERMINAL)]
            alive[t_hh] = False
            exit_day[t_hh] = t_day
            exit_kind[t_hh] = np.where(
                t_kind == K["penalty_revocation"], EXIT_REVOKED, EXIT_AUTHORITY
            )
            # A July marking after the household ended is never made.
            mark_day_now[t_hh] = np.where(
                mark_day_now[t_hh] <= t_day, mark_day_now[t_hh], np.iinfo(np.int64).max
            )

        mk = np.flatnonzero(mark_day_now != np.iinfo(np.int64).max)
        if len(mk):
            marks.append((mk, mark_day_now[mk], m // 12 + 2019 - 1))
            adverse_now[mk] += 1
        ring[:, m % 24] = adverse_now

        for om, (hh, acc) in pending.items():
            if om < m <= om + horizon:
                acc |= adverse_now[hh] > 0
                if m == om + horizon:
                    outcomes.append((om, hh, acc))  # type: ignore[arg-type]
        pending = {om: v for om, v in pending.items() if m < om + horizon}

        # Voluntary exit at the end of the month, after the month's events.
        still = np.flatnonzero(alive & active)
        e = params.exit_prob(ind[still], (ms - reg_day[still]) / 365.25, m)
        gone = still[rng.random(len(still)) < e]
        alive[gone] = False
        exit_day[gone] = me
        exit_kind[gone] = EXIT_VOLUNTARY

        if m in oracle_months:
            op = np.flatnonzero(alive & (reg_day <= me))
            order = (np.arange(24) + m + 1) % 24  # oldest (m-23) to newest (m)
            state = ObservedState(
                month=m,
                industry=ind[op],
                city=city[op],
                registered_day=reg_day[op],
                n_events=n_events[op],
                exposure=exposure[op],
                adverse_by_month=ring[op][:, order],
                jan_missing_prob=jan_q[op],
                report_filed_by_t=(filed_day[op] >= 0) & (filed_day[op] <= me),
            )
            orc.append((op, m, oracle_pd(params, state, horizon)))
            pending[m] = (op, np.zeros(len(op), dtype=bool))

    last = n_months - 1
    if last % 12 < 6:  # the history ends before July: this year's reports filed so far
        end = starts[n_months] - 1
        limit = np.where(exit_day >= 0, exit_day, end)  # the household's last day
        filed = due & (filed_day >= 0) & (filed_day <= limit)
        r_idx = np.flatnonzero(filed)
        reps.append((r_idx, last // 12 + 2019 - 1, filed_day[r_idx].copy()))
    return _collect(ev, marks, reps, orc, outcomes, exit_day, exit_kind)


def _collect(ev, marks, reps, orc, outcomes, exit_day, exit_kind) -> Simulated:
    def cat(parts, i, dtype):
        return np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, dtype=dtype)

    done = {om: (hh, acc) for om, hh, acc in outcomes}
    o_out = []
    for hh, om, _ in orc:
        if om in done:
            o_out.append(done[om][1].astype(np.int8))
        else:
            o_out.append(np.full(len(hh), -1, dtype=np.int8))
    return Simulated(
        ev_hh=cat(ev, 0, np.int64),
        ev_day=cat(ev, 1, np.int64),
        ev_kind=cat(ev, 2, np.int8),
        mark_hh=cat(marks, 0, np.int64),
        mark_day=cat(marks, 1, np.int64),
        mark_year=np.concatenate([np.full(len(p[0]), p[2]) for p in marks])
        if marks
        else np.zeros(0, np.int64),
        rep_hh=cat(reps, 0, np.int64),
        rep_year=np.concatenate([np.full(len(p[0]), p[1]) for p in reps])
        if reps
        else np.zeros(0, np.int64),
        rep_filed_day=cat(reps, 2, np.int64),
        exit_day=exit_day,
        exit_kind=exit_kind,
        oracle_hh=cat(orc, 0, np.int64),
        oracle_month=np.concatenate([np.full(len(p[0]), p[1]) for p in orc])
        if orc
        else np.zeros(0, np.int64),
        oracle_pd=cat(orc, 2, np.float64),
        oracle_outcome=np.concatenate(o_out) if o_out else np.zeros(0, np.int8),
    )
