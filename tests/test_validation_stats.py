"""The validation report's statistics against hand computations on fixed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.validation_stats import (
    auc_change,
    auc_delong,
    herfindahl,
    jeffreys,
    migration_stability,
)


def test_auc_and_its_delong_error_by_hand():
    # bads 0.9 and 0.4; goods 0.5, 0.2, 0.1: 5 of 6 pairs ordered -> AUC 5/6.
    # V10 = (1, 2/3), V01 = (1/2, 1, 1): var = (1/18)/2 + (1/12)/3 = 1/18.
    r = auc_delong(np.array([1, 1, 0, 0, 0]), np.array([0.9, 0.4, 0.5, 0.2, 0.1]))
    assert r["auc"] == pytest.approx(5 / 6)
    assert r["se"] == pytest.approx(math.sqrt(1 / 18))
    z = 1.959963984540054
    assert r["ci"] == pytest.approx([5 / 6 - z * math.sqrt(1 / 18), 5 / 6 + z * math.sqrt(1 / 18)])
    assert (r["n"], r["bads"]) == (5, 2)


def test_ties_count_half():
    assert auc_delong(np.array([1, 0]), np.array([0.5, 0.5]))["auc"] == 0.5
    with pytest.raises(ValueError):
        auc_delong(np.array([1, 1]), np.array([0.1, 0.2]))


def test_the_auc_change_test_by_hand():
    r = auc_change({"auc": 0.80}, {"auc": 0.75, "se": 0.02})
    assert r["statistic"] == pytest.approx(2.5)
    assert r["p_value"] == pytest.approx(0.0062096653, abs=1e-9)  # 1 - Phi(2.5)


def test_jeffreys_by_hand():
    # Beta(1/2, 3/2) CDF = (2/pi)(asin(sqrt x) + sqrt(x(1-x))); at 1/2: 1/2 + 1/pi
    assert jeffreys(0, 1, 0.5) == pytest.approx(0.5 + 1 / math.pi)
    assert jeffreys(30, 100, 0.05) < 1e-6 < jeffreys(3, 100, 0.05)  # too low a PD is caught


def test_herfindahl_by_hand():
    even = herfindahl([25, 25, 25, 25])
    assert even["hhi"] == pytest.approx(0.25) and even["normalised"] == pytest.approx(0.0)
    one = herfindahl([100, 0, 0, 0])
    assert one["hhi"] == 1.0 and one["cv"] == pytest.approx(math.sqrt(3))
    assert one["normalised"] == pytest.approx(1.0)


def test_migration_stability_by_hand():
    m = [[5, 1, 0, 0], [1, 5, 1, 1], [0, 0, 4, 1], [1, 0, 0, 0]]  # 20 households
    r = migration_stability(m)
    assert r == {"stayed": 14 / 20, "moved_one": 4 / 20, "moved_more": 2 / 20, "households": 20}
