"""Point-in-time features and labels: the leakage suite and the catalogue's rules."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from features.catalogue import (
    CATEGORIES,
    FEATURE_NAMES,
    FEATURES,
    FORBIDDEN_SOURCES,
    REASONS_BY_CODE,
    catalogue_version,
)
from features.engines import DuckDBEngine
from features.pit import FEATURE_COLUMNS, feature_sql, label_sql
from records.policy import Policy
from records.schema import TABLES
from tests.helpers import H, T, assert_frames_equal, household, micro, penalty_row
from tests.reference_features import reference

DATES = [date(2021, 12, 31), date(2024, 3, 31), date(2024, 6, 30), date(2025, 9, 30)]


@pytest.fixture(scope="module")
def wh(small_warehouse):
    con = duckdb.connect(str(small_warehouse), read_only=True)
    yield con
    con.close()


@pytest.mark.parametrize("as_of", DATES, ids=str)
def test_sql_agrees_with_the_reference_row_for_row(wh, as_of):
    ref_f, ref_l = reference(wh, as_of)
    engine = DuckDBEngine(wh)
    assert_frames_equal(engine.features(as_of).to_pandas(), ref_f)
    assert_frames_equal(engine.labels(as_of).to_pandas(), ref_l)
    assert ref_l.label.sum() > 0 and ref_f.penalties_3y.sum() > 0  # something was compared


def test_labels_equal_the_simulated_outcomes(wh, small_export):
    truth = duckdb.sql(
        f"SELECT uscc, as_of, outcome_12m FROM '{small_export}/truth/oracle.parquet' WHERE outcome_12m IS NOT NULL"
    ).df()
    dates = sorted(truth.as_of.dt.date.unique())
    assert len(dates) > 10
    engine = DuckDBEngine(wh)
    for d in dates:
        got = engine.labels(d).to_pandas()
        want = truth[truth.as_of.dt.date == d].sort_values("uscc")
        assert got.uscc.tolist() == want.uscc.tolist(), d  # same operating population
        assert (got.label.to_numpy() == want.outcome_12m.to_numpy()).all(), d


def test_output_columns_are_the_catalogue(wh):
    t = DuckDBEngine(wh).features(date(2024, 6, 30))
    assert tuple(t.column_names) == FEATURE_COLUMNS
    df = t.to_pandas()
    for name, values in CATEGORIES.items():
        assert set(df[name].unique()) <= set(values)


def _referenced_columns(sql: str) -> set[str]:
    return {c.name for c in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Column)}


def test_no_feature_reads_personal_information():
    cols = _referenced_columns(feature_sql(date(2024, 6, 30))) | _referenced_columns(
        feature_sql(date(2024, 6, 30), Policy.ALL_PUBLISHED)
    )
    assert "uscc" in cols and "registered_on" in cols  # the parse sees real columns
    leaked = cols & set(FORBIDDEN_SOURCES)
    assert not leaked, f"features read personal information: {leaked}"
    pii = {c.name for t in TABLES for c in t.columns if c.pii}
    assert pii <= set(FORBIDDEN_SOURCES)


def test_catalogue_rules():
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    for f in FEATURES:
        assert f.monotone in (-1, 0, 1)
        assert f.value_type in ("int", "float", "bool", "category")
        if f.calendar:  # lawful states of the calendar: never a reason (DOMAIN.md §6)
            assert f.reason is None, f"{f.name} is a calendar feature with a reason"
        elif f.monotone != 0:
            assert f.reason in REASONS_BY_CODE, f"{f.name} is constrained but has no reason code"
        if f.value_type == "category":
            assert f.monotone == 0 and f.name in CATEGORIES
        assert f.description_zh and f.description_en
    assert len(catalogue_version()) == 12


def test_catalogue_version_tracks_content(monkeypatch):
    import features.catalogue as cat

    before = cat.catalogue_version()
    changed = tuple(
        f
        if f.name != "penalties_1y"
        else cat.Feature(**{**f.__dict__, "monotone": 0, "reason": None})
        for f in cat.FEATURES
    )
    monkeypatch.setattr(cat, "FEATURES", changed)
    assert cat.catalogue_version() != before


# --- property tests on a micro warehouse ------------------------------------------------


def feats(records: dict, as_of: date = T, policy: Policy = Policy.LEGAL) -> dict:
    con = micro(records)
    rows = con.sql(feature_sql(as_of, policy)).df().drop(columns=["as_of"]).to_dict("records")
    assert len(rows) == 1
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rows[0].items()}


def label(records: dict, as_of: date = T) -> int:
    return int(micro(records).sql(label_sql(as_of)).df().label.iloc[0])


days = st.integers(min_value=-1500, max_value=400)
kinds = st.sampled_from(
    ["fine", "public_criticism", "fine;confiscation", "fine;suspension_order", "licence_revocation"]
)


@st.composite
def penalty(draw, n=0):
    pub = T + timedelta(days=draw(days))
    short = draw(st.booleans())
    return dict(
        uscc=H,
        decision_no=f"d{n}-{draw(st.integers(0, 10**9))}",
        decided_on=pub - timedelta(days=draw(st.integers(1, 28))),
        procedure="ordinary",
        published_on=pub,
        violation_type=draw(st.sampled_from(["food_safety", "pricing", "other"])),
        penalty_kinds=draw(kinds),
        fine_yuan=float(draw(st.integers(0, 200_000))),
        publicity_end=pub + timedelta(days=91 if short else 1095),
        repaired_on=None,
        withdrawn_on=None,
    )


@st.composite
def marking(draw):
    return dict(
        uscc=H,
        marked_on=T + timedelta(days=draw(days)),
        cause=draw(st.sampled_from(["report_not_filed", "unreachable", "report_false"])),
        restored_on=None,
        restore_reason=None,
    )


@st.composite
def domain(draw):
    """A household with a few records around T; some published after it."""
    return {
        "households": [household(industry=draw(st.sampled_from(["F", "H"])))],
        "penalties": draw(st.lists(penalty(), max_size=3, unique_by=lambda p: p["decision_no"])),
        "abnormal_status": draw(
            st.lists(marking(), max_size=2, unique_by=lambda m: (m["marked_on"], m["cause"]))
        ),
        "serious_dishonesty": [
            dict(uscc=H, listed_on=T + timedelta(days=d), reason="heavy_fine", removed_on=None)
            for d in draw(st.lists(days, max_size=1))
        ],
        "spot_checks": [
            dict(
                uscc=H,
                checked_on=T + timedelta(days=d - 10),
                published_on=T + timedelta(days=d),
                result=r,
            )
            for d, r in draw(
                st.lists(
                    st.tuples(days, st.sampled_from(["normal", "unreachable"])),
                    max_size=2,
                    unique_by=lambda x: x[0],
                )
            )
        ],
    }


PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _with(records: dict, table: str, row: dict) -> dict:
    return {**records, table: [*records.get(table, []), row]}


@PROPS
@given(domain(), penalty(n=99), st.integers(1, 400))
def test_a_penalty_published_after_t_is_invisible(records, p, after):
    late = {
        **p,
        "published_on": T + timedelta(days=after),
        "decided_on": T - timedelta(days=3),
        "publicity_end": T + timedelta(days=after + 1095),
    }
    assert feats(_with(records, "penalties", late)) == feats(records)


@PROPS
@given(
    domain(), penalty(n=99), st.integers(0, 400), st.sampled_from(["repaired_on", "withdrawn_on"])
)
def test_a_penalty_repaired_or_withdrawn_by_t_is_invisible(records, p, before, field):
    if p["published_on"] > T:
        p = {
            **p,
            "published_on": T - timedelta(days=before),
            "decided_on": T - timedelta(days=before + 5),
            "publicity_end": T - timedelta(days=before) + timedelta(days=1095),
        }
    ended = {**p, field: max(p["published_on"], T - timedelta(days=before))}
    assert feats(_with(records, "penalties", ended)) == feats(records)


@PROPS
@given(domain(), marking(), st.integers(0, 400))
def test_a_marking_restored_by_t_is_invisible(records, m, before):
    m = {
        **m,
        "marked_on": min(m["marked_on"], T - timedelta(days=before)),
        "restore_reason": "report_filed",
    }
    m["restored_on"] = max(m["marked_on"], T - timedelta(days=before))
    if any(
        (x["marked_on"], x["cause"]) == (m["marked_on"], m["cause"])
        for x in records["abnormal_status"]
    ):
        return  # same natural key as an existing marking: not a new record
    assert feats(_with(records, "abnormal_status", m)) == feats(records)


@PROPS
@given(domain(), st.integers(0, 300))
def test_a_usable_penalty_changes_only_penalty_features(records, ago):
    p = dict(
        uscc=H,
        decision_no="new",
        decided_on=T - timedelta(days=ago + 3),
        procedure="ordinary",
        published_on=T - timedelta(days=ago),
        violation_type="other",
        penalty_kinds="fine;confiscation",
        fine_yuan=5000.0,
        publicity_end=T - timedelta(days=ago) + timedelta(days=1095),
        repaired_on=None,
        withdrawn_on=None,
    )
    before, after = feats(records), feats(_with(records, "penalties", p))
    changed = {k for k in before if before[k] != after[k]}
    assert changed <= {
        "penalties_1y",
        "penalties_3y",
        "penalty_fines_yuan",
        "penalty_max_severity",
        "penalty_recency_days",
        "penalty_violation_types",
    }
    assert after["penalties_3y"] == before["penalties_3y"] + 1
    assert after["penalties_1y"] == before["penalties_1y"] + 1
    assert after["penalty_fines_yuan"] == before["penalty_fines_yuan"] + 5000.0


@PROPS
@given(domain(), st.integers(1, 365))
def test_labels_and_features_never_share_a_record(records, after):
    """(c) a record published after T moves only the label; one on or before T only features."""
    m_after = dict(
        uscc=H,
        marked_on=T + timedelta(days=after),
        cause="unreachable",
        restored_on=None,
        restore_reason=None,
    )
    assert feats(_with(records, "abnormal_status", m_after)) == feats(records)
    assert label(_with(records, "abnormal_status", m_after)) == 1
    m_before = {**m_after, "marked_on": T - timedelta(days=after - 1), "cause": "report_false"}
    if any(x["marked_on"] == m_before["marked_on"] for x in records["abnormal_status"]):
        return
    assert label(_with(records, "abnormal_status", m_before)) == label(records)


def test_all_published_sees_what_the_policy_hides():
    repaired = penalty_row(decision_no="r", repaired_on=date(2023, 9, 1))
    records = {"households": [household()], "penalties": [repaired]}
    assert feats(records)["penalties_3y"] == 0
    assert feats(records, policy=Policy.ALL_PUBLISHED)["penalties_3y"] == 1


def test_a_warning_alone_and_a_simple_procedure_never_count():
    warn = penalty_row(
        decision_no="w",
        decided_on=date(2024, 1, 1),
        published_on=None,
        penalty_kinds="warning",
        fine_yuan=0.0,
        publicity_end=None,
    )
    simple = {
        **warn,
        "decision_no": "s",
        "procedure": "simple",
        "penalty_kinds": "fine",
        "fine_yuan": 100.0,
    }
    records = {"households": [household()], "penalties": [warn, simple]}
    for policy in Policy:
        assert feats(records, policy=policy)["penalties_3y"] == 0
    assert label(records, date(2023, 6, 30)) == 0


def test_deregistered_households_leave_the_population():
    h = household(
        status="deregistered", status_changed_on=date(2024, 3, 5), status_reason="voluntary"
    )
    change = dict(
        uscc=H,
        change_type="status",
        changed_on=date(2024, 3, 5),
        new_status="deregistered",
        reason="voluntary",
    )
    con = micro({"households": [h], "registration_changes": [change]})
    assert len(con.sql(feature_sql(date(2024, 3, 4))).df()) == 1
    assert len(con.sql(feature_sql(date(2024, 3, 5))).df()) == 0
    # voluntary exit inside the window: kept, label 0
    assert con.sql(label_sql(date(2023, 12, 31))).df().label.tolist() == [0]
