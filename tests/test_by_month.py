"""Quality on every calendar position: the month-by-month table and the gate's targets."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from scoring.spec import CREDREF
from training import by_month


def _month(
    as_of: date, classes: list[str], penalties: list[int], ages: list[float]
) -> pd.DataFrame:
    n = len(classes)
    frame = pd.DataFrame({f: np.zeros(n) for f in CREDREF.features})
    return frame.assign(
        uscc=[f"h{i}" for i in range(n)],
        as_of=as_of,
        risk_class=classes,
        penalties_3y=penalties,
        reg_age_years=ages,
        reporting_cycle_day=as_of.day,  # a calendar feature: never an event
    )


def test_a_class_move_counts_against_the_calendar_only_without_a_record_move():
    before = _month(date(2025, 1, 31), ["A", "A", "B", "C"], [0, 0, 0, 1], [1.0, 2.0, 3.0, 4.0])
    after = _month(date(2025, 2, 28), ["B", "A", "B", "D"], [1, 0, 0, 1], [1.1, 2.1, 3.1, 4.1])
    moves = by_month.calendar_moves(before, after, CREDREF)
    # h0 moved with a penalty (an event); h3 moved with none: 1 of the 3 quiet ones
    assert moves == {"without_event": 3, "class_moves_without_event": 1 / 3}


def test_by_month_gives_one_row_per_as_of_date_with_the_figures_the_gate_reads():
    rng = np.random.default_rng(1)
    months = []
    for m in (1, 2, 3):
        frame = _month(date(2025, m, 28), ["A"] * 200, [0] * 200, list(rng.uniform(0, 9, 200)))
        months.append(frame.assign(oracle_pd=rng.uniform(0, 0.3, 200)))
    raw = pd.concat(months, ignore_index=True)
    y = (rng.uniform(size=len(raw)) < raw.oracle_pd).astype(int).to_numpy()
    scored = pd.DataFrame({"pd": raw.oracle_pd * 0.9, "risk_class": raw.risk_class})
    table = by_month.by_month(raw, y, scored, CREDREF)
    assert list(table.as_of) == [str(date(2025, m, 28)) for m in (1, 2, 3)]
    assert table.oracle_ratio.between(0.99, 1.01).all()  # same ranking as the oracle
    assert table.class_moves_without_event.iloc[1:].eq(0).all()
    worst = by_month.worst(table)
    assert worst["worst_month_ece"] == table.ece.max()
    assert worst["worst_month_class_moves_without_event"] == 0.0


def test_the_gate_names_each_target_a_worst_month_misses():
    good = {
        "worst_month_ece": 0.01,
        "worst_month_oracle_ratio": 0.98,
        "worst_month_class_moves_without_event": 0.01,
    }
    assert by_month.failures(good) == []
    bad = {
        "worst_month_ece": 0.03,
        "worst_month_oracle_ratio": 0.9,
        "worst_month_class_moves_without_event": 0.2,
    }
    found = by_month.failures(bad)
    assert len(found) == 3 and "ECE" in found[0] and "oracle" in found[1] and "class" in found[2]
    assert by_month.failures(good | {"worst_month_oracle_ratio": None}) == []


def test_class_moves_are_measured_only_a_month_apart_and_the_gate_needs_them():
    rng = np.random.default_rng(2)
    months = [
        _month(d, ["A", "B"] * 50, [0] * 100, list(rng.uniform(0, 9, 100)))
        for d in (date(2024, 12, 31), date(2025, 6, 30))
    ]
    raw = pd.concat(months, ignore_index=True).assign(oracle_pd=0.1)
    y = np.tile([0, 1], 100)
    scored = pd.DataFrame({"pd": np.full(200, 0.1), "risk_class": raw.risk_class})
    table = by_month.by_month(raw, y, scored, CREDREF)
    assert table.class_moves_without_event.isna().all()  # six months apart: not a month
    found = by_month.failures(by_month.worst(table))
    assert any("not measured" in f for f in found)
