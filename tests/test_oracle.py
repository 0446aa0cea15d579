"""The truth itself: the oracle PD agrees with simulated outcomes within sampling error."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import duckdb
import numpy as np
import pytest
from scipy import stats

from synth.generate import generate
from synth.risk import ObservedState, RiskParams, month_start_day, oracle_pd
from tests.conftest import END, SECRET

DATES = (date(2022, 12, 31), date(2024, 6, 30), date(2025, 3, 31))


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle")
    generate(out, 60_000, seed=21, end=END, secret=SECRET, oracle_dates=DATES, progress=False)
    return duckdb.sql(f"SELECT * FROM '{out}/truth/oracle.parquet'").df()


def hosmer_lemeshow(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Chi-square statistic over probability deciles (df = bins)."""
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    stat = 0.0
    for b in range(bins):
        m = idx == b
        exp, obs, n = p[m].sum(), y[m].sum(), m.sum()
        stat += (obs - exp) ** 2 / (exp * (1 - exp / n))
    return stat


@pytest.mark.parametrize("as_of", DATES)
def test_oracle_is_calibrated_on_simulated_outcomes(truth, as_of):
    rows = truth[truth.as_of.astype(str) == as_of.isoformat()]
    p, y = rows.oracle_pd.to_numpy(), rows.outcome_12m.to_numpy().astype(float)
    assert len(rows) > 20_000 and not np.isnan(y).any()
    z_all = (y.sum() - p.sum()) / np.sqrt((p * (1 - p)).sum())
    assert abs(z_all) < 3.5
    critical = stats.chi2.ppf(0.999, df=10)
    assert hosmer_lemeshow(p, y) < critical
    # The same check has the power to reject an oracle that is off by 25%.
    assert hosmer_lemeshow(np.clip(p * 1.25, 0, 1), y) > critical


def test_oracle_ranks_well(truth):
    from sklearn.metrics import roc_auc_score

    rows = truth[truth.as_of.astype(str) == "2024-06-30"]
    assert roc_auc_score(rows.outcome_12m, rows.oracle_pd) > 0.7


def _state(n_events=0, exposure=0.0, month=65, adverse=None, jan_q=np.nan, filed=False, industry=3):
    return ObservedState(
        month=month,
        industry=np.array([industry]),
        city=np.array([0]),
        registered_day=np.array([int(month_start_day(0)) - 3 * 365]),
        n_events=np.array([n_events]),
        exposure=np.array([exposure]),
        adverse_by_month=np.zeros((1, 24), dtype=np.int16) if adverse is None else adverse,
        jan_missing_prob=np.array([jan_q]),
        report_filed_by_t=np.array([filed]),
    )


def test_more_events_raise_and_more_exposure_lowers_the_oracle():
    params = RiskParams()
    base = oracle_pd(params, _state(n_events=1, exposure=0.5))[0]
    assert oracle_pd(params, _state(n_events=3, exposure=0.5))[0] > base
    assert oracle_pd(params, _state(n_events=1, exposure=2.0))[0] < base
    recent = np.zeros((1, 24), dtype=np.int16)
    recent[0, -1] = 1
    assert oracle_pd(params, _state(n_events=1, exposure=0.5, adverse=recent))[0] > base


def test_unfiled_report_on_30_june_makes_the_marking_certain():
    params = RiskParams()
    june = 5 * 12 + 5  # T = 2024-06-30
    assert oracle_pd(params, _state(month=june, jan_q=0.05, filed=False))[0] == pytest.approx(1.0)
    filed = oracle_pd(params, _state(month=june, jan_q=0.05, filed=True))[0]
    assert 0 < filed < 0.5


def test_no_hazard_no_risk():
    quiet = replace(RiskParams(), base_rate=0.0, missing_base=0.0)
    assert oracle_pd(quiet, _state(n_events=5, exposure=1.0))[0] == pytest.approx(0.0, abs=1e-12)
