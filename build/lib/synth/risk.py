"""The known risk process of the synthetic domain, and its exact oracle.

Time runs in calendar months m = 0, 1, ... from January 2019. Every household i carries
an unobserved frailty Z_i ~ Gamma(shape=k, rate=k) (mean 1).

Processes (see ``docs`` in README, section "The synthetic domain"):

* **Z-events** ("revealing" events): a Poisson process of intensity Z_i * b_i(m) per
  year, piecewise constant over months. b_i(m) depends only on the observable state at
  the start of month m: industry, city, registration age (non-linear), an industry x age
  interaction, calendar drift (including a city x industry campaign), and the number of
  *adverse* records published in the previous 24 months (self-excitation). Each event is
  published on a uniform day of its month, and its kind is drawn from probabilities
  that depend on industry only: with probability alpha(industry) it is adverse (penalty
  above the minor kind, abnormal marking, serious listing, revocation, forced
  deregistration), otherwise revealing but not adverse (minor penalty, address change,
  spot-check problem).
* **Missing annual reports**: each January, a household whose report is due decides,
  independently of Z, not to file with probability q_i (industry, age, adverse history
  at the start of January). A missing report is marked abnormal in July (adverse).
  Filers file on a uniform day from 1 January to 30 June.
* **Voluntary exit**: at the end of each month with probability e_i(m) (industry, age,
  calendar time), independent of Z.
* Everything else (restorations, repairs, withdrawals, late filings, operator and name
  changes, normal spot checks, unpublished warnings) is independent of Z and never
  enters b, q or e.

The oracle. Given the published records up to T (the end of month m), the likelihood of
Z is proportional to Z^N exp(-Z L) with N the number of Z-events published since the
household's exposure began and L the integrated baseline sum(b)/12 over the same months
(terms that do not involve Z drop out, since q, e and the Z-independent processes do
not depend on Z). With the Gamma(k, k) prior the posterior is Gamma(a = k + N,
rate r = k + L), so for any B >= 0, E[exp(-Z B) | records] = (r / (r + B))^a.

In the window months m+1 .. m+12, conditional on no adverse event so far, the
baselines evolve deterministically (age and calendar advance, old adverse records age
out of the 24-month count), so with B_j = sum_{i <= j} alpha * b(m+i) / 12,
s_j the probability to still operate at the start of window month j, and F_j the
probability that no missing-report marking fell in window months <= j:

    P(no adverse event) = sum_j s_j e_j (r/(r+B_j))^a F_j + s_13 (r/(r+B_12))^a F_12

and the oracle PD is one minus that. Exits are applied at month end, after the month's
events, which is also how the simulation orders them. F_j uses q from the January
decision: if the decision month is after T, q from the deterministic path; if it is at
or before T and the report is already filed, 0; if not yet filed, q / (q + (1 - q) u)
with u the share of the filing window still ahead of T (u = 0 on 30 June: the marking
is then certain).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from records.schema import INDUSTRIES

EPOCH_YEAR = 2019
N_INDUSTRIES = len(INDUSTRIES)
_IND = {s: i for i, s in enumerate(INDUSTRIES)}


def _by_industry(values: dict[str, float], default: float) -> np.ndarray:
    return np.array([values.get(s, default) for s in INDUSTRIES], dtype=np.float64)


@dataclass(frozen=True)
class RiskParams:
    """Parameters of the known risk process. Rates are per year."""

    frailty_shape: float = 1.0
    base_rate: float = 0.055
    industry_mult: np.ndarray = field(
        default_factory=lambda: _by_industry(
            {
                "A": 0.8,
                "C": 1.3,
                "E": 1.1,
                "G": 1.1,
                "H": 1.5,
                "I": 0.6,
                "L": 0.8,
                "M": 0.6,
                "O": 0.9,
                "P": 1.2,
            },
            1.0,
        )
    )
    #: city order as in records.geography.CITIES
    city_mult: np.ndarray = field(
        default_factory=lambda: np.array([0.85, 0.9, 1.05, 1.1, 1.05, 1.15, 1.0, 1.1])
    )
    young_catering_mult: float = 1.6  # interaction: industry H in its first 2 years
    self_excite: float = 0.5  # per adverse record in the last 24 months, capped at 4
    drift_per_year: float = 0.05
    #: campaigns: (city index, industry, first month, multiplier) each
    campaigns: tuple[tuple[int, str, int, float], ...] = (
        (5, "F", 60, 1.5),
    )  # Shenzhen retail, 2024
    adverse_share: np.ndarray = field(
        default_factory=lambda: _by_industry({"H": 0.6, "I": 0.4, "M": 0.4}, 0.5)
    )
    missing_base: float = 0.04
    missing_industry: np.ndarray = field(
        default_factory=lambda: _by_industry({"H": 1.3, "F": 1.0}, 0.9)
    )
    exit_base: float = 0.06
    exit_young: float = 0.10

    # --- the three observable-only functions -------------------------------------

    def age_curve(self, age_years: np.ndarray) -> np.ndarray:
        """Non-linear effect of registration age: high when young, a dip, a slow rise."""
        a = np.maximum(age_years, 0.0)
        return (
            0.75 + 1.25 * np.exp(-a / 1.2) + 0.25 * (1.0 - np.exp(-np.maximum(a - 8.0, 0.0) / 4.0))
        )

    def intensity(
        self,
        industry: np.ndarray,
        city: np.ndarray,
        age_years: np.ndarray,
        month: int | np.ndarray,
        n_adverse_24m: np.ndarray,
    ) -> np.ndarray:
        """b: Z-event intensity per year, from the observable state at a month's start."""
        b = self.base_rate * self.industry_mult[industry] * self.city_mult[city]
        b = b * self.age_curve(age_years)
        young_h = (industry == _IND["H"]) & (age_years < 2.0)
        b = np.where(young_h, b * self.young_catering_mult, b)
        b = b * np.exp(self.drift_per_year * np.asarray(month) / 12.0)
        for c_city, c_ind, c_month, c_mult in self.campaigns:
            hit = (city == c_city) & (industry == _IND[c_ind]) & (np.asarray(month) >= c_month)
            b = np.where(hit, b * c_mult, b)
        return b * (1.0 + self.self_excite * np.minimum(n_adverse_24m, 4))

    def missing_prob(
        self, industry: np.ndarray, age_years: np.ndarray, n_adverse_24m: np.ndarray
    ) -> np.ndarray:
        """q: probability, decided in January, of not filing the due annual report."""
        q = self.missing_base * self.missing_industry[industry]
        q = q * np.where(age_years < 2.0, 1.8, 1.0) * (1.0 + 0.7 * np.minimum(n_adverse_24m, 4))
        return np.minimum(q, 0.5)

    def exit_prob(
        self, industry: np.ndarray, age_years: np.ndarray, month: int | np.ndarray
    ) -> np.ndarray:
        """e: probability of voluntary deregistration at the end of a month."""
        h = self.exit_base + self.exit_young * np.exp(-np.maximum(age_years, 0.0) / 1.5)
        h = h * np.where(industry == _IND["H"], 1.2, 1.0) * (1.0 + 0.03 * np.asarray(month) / 12.0)
        return 1.0 - np.exp(-h / 12.0)


#: The drift domain (``credref generate --drift``): from January 2025 a market-order
#: campaign in Wuhan multiplies the adverse-event rate of its retail and catering
#: households by five, so monitoring can be seen to flag a population that moved away
#: from what the model learned.
DRIFT_CAMPAIGNS = ((3, "F", 72, 5.0), (3, "H", 72, 5.0))


def drift_params() -> RiskParams:
    base = RiskParams()
    return RiskParams(campaigns=(*base.campaigns, *DRIFT_CAMPAIGNS))


@dataclass
class ObservedState:
    """What the records published up to the end of month m say about each household.

    Only observable quantities: the oracle never sees the frailty.
    """

    month: int  # T is the last day of this month
    industry: np.ndarray
    city: np.ndarray
    registered_day: np.ndarray  # days since 1970-01-01
    n_events: np.ndarray  # Z-events published since exposure began
    exposure: np.ndarray  # integrated baseline sum(b)/12 over exposed months
    adverse_by_month: np.ndarray  # (n, 24) adverse records in months m-23 .. m
    jan_missing_prob: np.ndarray  # q drawn last January for this year's report (nan if none)
    report_filed_by_t: np.ndarray  # the report due this 30 June is filed on or before T


def month_start_day(month: int | np.ndarray) -> np.ndarray:
    """First day (days since 1970-01-01) of month index ``month`` (0 = January 2019)."""
    m = np.asarray(month, dtype=np.int64) + (EPOCH_YEAR - 1970) * 12
    return m.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def age_at(month: int | np.ndarray, registered_day: np.ndarray) -> np.ndarray:
    """Registration age in years at the start of a month."""
    return (month_start_day(month) - registered_day) / 365.25


def oracle_pd(params: RiskParams, s: ObservedState, horizon_months: int = 12) -> np.ndarray:
    """Exact probability of an adverse record published in the next ``horizon_months``.

    Args:
        params: the risk process.
        s: the observed state at T, for households operating at T.
        horizon_months: window length (12 for the product's label).

    Returns:
        PD per household, given only records published up to T.
    """
    m = s.month
    k = params.frailty_shape
    a = k + s.n_events
    r = k + s.exposure
    alpha = params.adverse_share[s.industry]
    n = len(a)

    b_cum = np.zeros(n)
    survive = np.ones(n)  # s_j
    no_marking = np.ones(n)  # F_j
    p_none = np.zeros(n)
    for j in range(1, horizon_months + 1):
        mm = m + j
        n24 = s.adverse_by_month[:, j - 1 :].sum(axis=1)
        age = age_at(mm, s.registered_day)
        b_cum += alpha * params.intensity(s.industry, s.city, age, mm, n24) / 12.0
        if mm % 12 == 6:  # July: the missing-report marking for last year's report
            no_marking *= 1.0 - _marking_prob(params, s, mm)
        laplace = (r / (r + b_cum)) ** a
        if j < horizon_months:
            e = params.exit_prob(s.industry, age, mm)
            p_none += survive * e * laplace * no_marking
            survive = survive * (1.0 - e)
        else:
            # Exit at the end of the last month changes nothing: it follows its events.
            p_none += survive * laplace * no_marking
    return 1.0 - p_none


def _n24_path(s: ObservedState, month: int) -> np.ndarray:
    """Adverse records in the 24 months before ``month`` if none are added after T."""
    j = month - s.month
    return s.adverse_by_month[:, max(j - 1, 0) :].sum(axis=1)


def _marking_prob(params: RiskParams, s: ObservedState, july: int) -> np.ndarray:
    """Probability that the report due before ``july`` is missing, given records at T."""
    january = july - 6
    report_year_end = month_start_day(january) - 1  # 31 December of the report year
    due = s.registered_day <= report_year_end
    if january > s.month:
        age = age_at(january, s.registered_day)
        q = params.missing_prob(s.industry, age, _n24_path(s, january))
        return np.where(due, q, 0.0)
    q = np.nan_to_num(s.jan_missing_prob, nan=0.0)
    window_start = month_start_day(january)
    window_end = month_start_day(july)  # exclusive: 1 July
    t_day = month_start_day(s.month + 1) - 1
    u = np.clip((window_end - 1 - t_day) / (window_end - window_start), 0.0, 1.0)
    pending = q / np.maximum(q + (1.0 - q) * u, 1e-300)
    pending = np.where(q > 0, pending, 0.0)
    return np.where(due & ~s.report_filed_by_t, pending, 0.0)
