"""The synthetic domain: determinism, valid codes, and the rules of DOMAIN.md §2."""

from __future__ import annotations

import hashlib
from datetime import date

import duckdb
import numpy as np
import pytest
from stdnum.cn import ric, uscc

from records.geography import CITIES
from records.schema import TABLES
from synth.generate import generate, quarter_ends
from tests.conftest import END, SECRET


def _digest(folder) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    # Three chunks, so one and two workers take different paths to the same files.
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    kw = dict(
        households=5_000,
        end=END,
        secret=SECRET,
        oracle_dates=(date(2024, 6, 30),),
        progress=False,
        chunk_size=2_000,
    )
    generate(a, seed=5, workers=1, **kw)
    generate(b, seed=5, workers=2, **kw)
    generate(c, seed=6, workers=2, **kw)
    assert _digest(a) == _digest(b)
    assert _digest(a)["households.parquet"] != _digest(c)["households.parquet"]


def test_every_table_and_the_truth_are_written_apart(small_export):
    for t in TABLES:
        assert (small_export / f"{t.name}.parquet").exists()
    assert (small_export / "truth" / "oracle.parquet").exists()
    assert not list(small_export.glob("*oracle*"))  # truth never sits beside the records


def test_every_uscc_is_valid_and_matches_its_district(small_export):
    rows = duckdb.sql(
        f"SELECT uscc, division_code FROM '{small_export}/households.parquet'"
    ).fetchall()
    districts = {code for c in CITIES for code, _ in c.districts}
    assert len({u for u, _ in rows}) == len(rows)
    for code, division in rows:
        assert uscc.is_valid(code), code
        assert code.startswith("92") and code[2:8] == division
        assert division in districts


def test_every_generated_id_number_has_a_valid_gb_11643_check_character():
    from synth.population import id_numbers

    rng = np.random.default_rng(11)
    districts = np.array([code for c in CITIES for code, _ in c.districts] * 400)
    days = rng.integers(14_000, 20_000, len(districts))
    numbers = id_numbers(districts, days, rng)
    assert len(numbers) == len(districts) > 10_000
    assert all(ric.is_valid(n) for n in numbers)


def _q(export, sql: str):
    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"CREATE VIEW {t.name} AS SELECT * FROM '{export}/{t.name}.parquet'")
    return con.execute(sql).fetchall()


def test_age_profile_follows_hangzhou(tmp_path):
    out = tmp_path / "d"
    generate(out, 40_000, seed=9, end=END, secret=SECRET, oracle_dates=(), progress=False)
    mean_age, young = _q(
        out,
        f"""
        SELECT avg(date_diff('day', registered_on, DATE '{END}') / 365.25),
               avg((registered_on > DATE '{END}' - INTERVAL 1 YEAR)::INT)
        FROM households WHERE status = 'operating'""",
    )[0]
    assert 4.3 < mean_age < 5.1  # Hangzhou: 4.69 years
    assert 0.16 < young < 0.22  # Hangzhou: 18.78% younger than one year


def test_missing_report_marked_only_after_30_june(small_export):
    bad = _q(
        small_export,
        """
        SELECT count(*) FROM abnormal_status a
        LEFT JOIN annual_reports r ON r.uscc = a.uscc AND r.report_year = year(a.marked_on) - 1
        WHERE a.cause = 'report_not_filed'
          AND (month(a.marked_on) <> 7 OR r.uscc IS NULL
               OR (r.filed_on IS NOT NULL AND r.filed_on <= make_date(r.report_year + 1, 6, 30)))""",
    )
    assert bad == [(0,)]
    assert (
        _q(small_export, "SELECT count(*) FROM abnormal_status WHERE cause = 'report_not_filed'")[
            0
        ][0]
        > 0
    )


def test_penalties_obey_publicity_and_repair_rules(small_export):
    checks = {
        "published before decided": "published_on < decided_on",
        "warning or simple procedure published": "published_on IS NOT NULL AND (penalty_kinds = 'warning' OR procedure = 'simple')",
        "short publicity wrong": """published_on IS NOT NULL AND (penalty_kinds = 'public_criticism'
            OR (penalty_kinds = 'fine' AND fine_yuan <= 3000))
            AND publicity_end <> published_on + INTERVAL 3 MONTH - INTERVAL 1 DAY""",
        "long publicity wrong": """published_on IS NOT NULL AND NOT (penalty_kinds = 'public_criticism'
            OR (penalty_kinds = 'fine' AND fine_yuan <= 3000))
            AND publicity_end <> published_on + INTERVAL 3 YEAR - INTERVAL 1 DAY""",
        "repaired too early": """repaired_on IS NOT NULL AND repaired_on < published_on +
            CASE WHEN violation_type IN ('food_safety', 'drug_safety', 'special_equipment')
                 THEN INTERVAL 12 MONTH ELSE INTERVAL 6 MONTH END""",
        "repaired an excluded kind": """repaired_on IS NOT NULL AND regexp_matches(penalty_kinds,
            'suspension_order|licence_revocation|practice_ban')""",
        "repaired after publicity end": "repaired_on > publicity_end",
    }
    for name, cond in checks.items():
        assert _q(small_export, f"SELECT count(*) FROM penalties WHERE {cond}") == [(0,)], name
    kinds = dict(
        _q(
            small_export,
            """SELECT repaired_on IS NOT NULL, count(*) FROM penalties
        WHERE published_on IS NOT NULL GROUP BY 1""",
        )
    )
    assert kinds[True] > 0 and kinds[False] > 0  # the rules above were exercised


def test_serious_listing_only_with_a_heavy_penalty(small_export):
    orphans = _q(
        small_export,
        """
        SELECT count(*) FROM serious_dishonesty s WHERE NOT EXISTS (
            SELECT 1 FROM penalties p WHERE p.uscc = s.uscc AND p.published_on = s.listed_on
              AND (p.fine_yuan >= 100000 OR regexp_matches(p.penalty_kinds,
                   'licence_revocation|suspension_order|licence_suspension|business_restriction')))""",
    )
    assert orphans == [(0,)]
    assert _q(small_export, "SELECT count(*) FROM serious_dishonesty")[0][0] > 0


def test_no_record_after_a_household_ends(small_export):
    dated = {
        "registration_changes": ["changed_on"],
        "abnormal_status": ["marked_on", "restored_on"],
        "penalties": ["published_on"],
        "annual_reports": ["filed_on"],
        "serious_dishonesty": ["listed_on"],
        "spot_checks": ["checked_on"],
    }
    for table, cols in dated.items():
        for col in cols:
            n = _q(
                small_export,
                f"""SELECT count(*) FROM {table} r JOIN households h USING (uscc)
                WHERE h.status <> 'operating' AND r.{col} > h.status_changed_on""",
            )[0][0]
            assert n == 0, f"{table}.{col} after the household ended"


def test_terminal_status_matches_its_record(small_export):
    # The export is as known at the end: a record may still be on its way (synth.feed),
    # so the rule is checked on exits older than the longest delay.
    from synth.feed import MAX_DELAY_DAYS

    arrived = f"h.status_changed_on <= DATE '{END}' - INTERVAL {MAX_DELAY_DAYS} DAY"
    rows = dict(
        _q(
            small_export,
            f"""
        SELECT h.status_reason, count(*) FILTER (WHERE c.uscc IS NULL)
        FROM households h LEFT JOIN registration_changes c
          ON c.uscc = h.uscc AND c.change_type = 'status' AND c.changed_on = h.status_changed_on
             AND c.new_status = h.status
        WHERE h.status <> 'operating' AND {arrived} GROUP BY 1""",
        )
    )
    assert set(rows) == {"voluntary", "authority_initiated", "licence_revoked"}
    assert all(v == 0 for v in rows.values())
    revoked_without_penalty = _q(
        small_export,
        f"""
        SELECT count(*) FROM households h WHERE status = 'revoked' AND {arrived} AND NOT EXISTS (
          SELECT 1 FROM penalties p WHERE p.uscc = h.uscc AND p.published_on = h.status_changed_on
            AND p.penalty_kinds LIKE '%licence_revocation%')""",
    )
    assert revoked_without_penalty == [(0,)]


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="month end"):
        generate(tmp_path, 10, 1, date(2026, 9, 29), SECRET, progress=False)
    with pytest.raises(ValueError, match="positive"):
        generate(tmp_path, 0, 1, END, SECRET, progress=False)
    with pytest.raises(ValueError, match="oracle dates"):
        generate(tmp_path, 10, 1, END, SECRET, oracle_dates=(date(2027, 1, 31),), progress=False)


def test_quarter_ends():
    assert quarter_ends(date(2020, 2, 1), date(2020, 12, 31)) == (
        date(2020, 3, 31),
        date(2020, 6, 30),
        date(2020, 9, 30),
        date(2020, 12, 31),
    )


@pytest.mark.parametrize("end", [date(2024, 4, 30), date(2024, 6, 30)])
def test_a_history_ending_before_july_has_the_final_years_reports_filed_so_far(tmp_path, end):
    generate(tmp_path, 4_000, seed=2, end=end, secret=SECRET, workers=1, progress=False)
    rows = duckdb.sql(
        f"SELECT count(*), count(filed_on), max(filed_on) FROM '{tmp_path}/annual_reports.parquet' "
        "WHERE report_year = 2023"
    ).fetchall()[0]
    n, filed, latest = rows
    assert n > 1_000 and filed == n  # rows of reports filed by the end, none later
    assert latest <= end


def test_the_feed_never_changes_the_truth(tmp_path):
    """Knowledge time is drawn from a stream of its own: the oracle stays exact."""
    kw = dict(workers=1, progress=False, chunk_size=1_000)
    end = date(2024, 12, 31)
    generate(tmp_path / "plain", 2_000, 9, end, SECRET, **kw)
    generate(tmp_path / "fed", 2_000, 9, end, SECRET, feed_days=7, history=True, **kw)
    for name in ("oracle", "frailty"):
        a = (tmp_path / "plain" / "truth" / f"{name}.parquet").read_bytes()
        b = (tmp_path / "fed" / "truth" / f"{name}.parquet").read_bytes()
        assert a == b


def test_feed_rates_are_the_documented_assumptions(tmp_path):
    from synth import feed

    out = tmp_path / "hist"
    generate(out, 20_000, 2, date(2025, 12, 31), SECRET, workers=1, progress=False, history=True)
    con = duckdb.connect()
    pen = f"'{out}/penalties.parquet'"
    versions, records, copies = con.execute(
        f"SELECT count(*), count(DISTINCT decision_no), count(*) FILTER (decision_no LIKE '%E') "
        f"FROM {pen}"
    ).fetchall()[0]
    real = records - copies
    assert copies / real == pytest.approx(feed.DOUBLE_ENTRY_SHARE, abs=0.004)
    corrected = con.execute(
        f"""SELECT count(DISTINCT a.decision_no) FROM {pen} a JOIN {pen} b
        ON a.decision_no = b.decision_no AND a.known_to = b.known_from
        WHERE a.fine_yuan IS DISTINCT FROM b.fine_yuan OR a.violation_type <> b.violation_type
           OR a.decided_on <> b.decided_on"""
    ).fetchall()[0][0]
    assert corrected / real == pytest.approx(feed.CORRECTION_SHARE, abs=0.008)
    late = con.execute(
        f"SELECT avg(CASE WHEN known_from > registered_on THEN 1 ELSE 0 END) "
        f"FROM '{out}/households.parquet' WHERE status = 'operating'"
    ).fetchall()[0][0]
    assert late == pytest.approx(feed.LATE_SHARE, abs=0.01)
    assert versions > records
