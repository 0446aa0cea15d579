"""Ingestion: every rule quarantines its row with its reason; nothing is ever lost."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest
from stdnum.cn import uscc as stdnum_uscc

from records.ingest import ExportError, ingest
from records.schema import TABLES, TABLES_BY_NAME


def _rows(export: Path, table: str, where: str = "true", limit: int = 1) -> list[dict]:
    rel = duckdb.sql(f"SELECT * FROM '{export}/{table}.parquet' WHERE {where} LIMIT {limit}")
    return [
        {k: ("" if v is None else str(v)) for k, v in zip(rel.columns, row, strict=True)}
        for row in rel.fetchall()
    ]


def _write_csv(
    folder: Path, table: str, rows: list[dict], columns: list[str] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cols = columns or list(TABLES_BY_NAME[table].column_names)
    path = folder / f"{table}.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


def _snapshot(warehouse: Path) -> str:
    """Hash of every table's content: equal snapshots mean an unchanged warehouse."""
    if not warehouse.exists():
        return "absent"
    con = duckdb.connect(str(warehouse), read_only=True)
    h = hashlib.sha256()
    names = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables ORDER BY 1"
        ).fetchall()
    ]
    for name in names:
        h.update(name.encode())
        for row in con.execute(f'SELECT * FROM "{name}" ORDER BY ALL').fetchall():
            h.update(repr(row).encode())
    con.close()
    return h.hexdigest()


@pytest.fixture()
def base(small_export, tmp_path) -> tuple[Path, Path, list[dict]]:
    """A warehouse holding 20 valid households, and those households' rows."""
    households = _rows(small_export, "households", "status = 'operating'", 20)
    export = tmp_path / "base"
    _write_csv(export, "households", households)
    warehouse = tmp_path / "wh.duckdb"
    ingest(export, warehouse, progress=False)
    return warehouse, tmp_path, households


def _with_check(code17: str) -> str:
    return code17 + stdnum_uscc.calc_check_digit(code17)


def _household_cases(h: dict) -> list[tuple[dict, str]]:
    u = h["uscc"]
    wrong_check = u[:17] + ("0" if u[17] != "0" else "1")
    return [
        ({"uscc": wrong_check}, "uscc: wrong check character"),
        ({"uscc": u[:16]}, "uscc: wrong length"),
        ({"uscc": u[:10] + "IOSVZ" + u[15:]}, "uscc: characters outside"),
        ({"uscc": _with_check("91" + u[2:17])}, "must start with 92"),
        (
            {"uscc": _with_check("92" + "110101" + u[8:17])},
            "positions 3-8 differ from division_code",
        ),
        ({"registered_on": "2021-02-30"}, "registered_on: not a valid date"),
        ({"operator_name": " "}, "operator_name: required"),
        ({"org_form": "company"}, "org_form: not an allowed value"),
        (
            {"status": "deregistered", "status_changed_on": ""},
            "status_changed_on: required when not operating",
        ),
        (
            {
                "status": "deregistered",
                "status_changed_on": "1990-01-01",
                "status_reason": "voluntary",
            },
            "status_changed_on: before registered_on",
        ),
        ({"operator_id_hmac": "abc"}, "operator_id_hmac: not a 64-hex-digit"),
    ]


def test_every_household_rule_quarantines_with_its_reason(small_export, tmp_path):
    good = _rows(small_export, "households", "status = 'operating'", 2)
    cases = _household_cases(good[1])
    rows = [good[0]] + [{**good[1], **change} for change, _ in cases]
    export = tmp_path / "e"
    _write_csv(export, "households", rows)
    warehouse = tmp_path / "wh.duckdb"
    [report] = ingest(export, warehouse, progress=False)
    assert (report.read, report.accepted, report.quarantined) == (len(rows), 1, len(cases))
    con = duckdb.connect(str(warehouse), read_only=True)
    got = dict(con.execute("SELECT row_number, reason FROM _quarantine").fetchall())
    for i, (_, reason) in enumerate(cases):
        assert reason in got[i + 2], (reason, got[i + 2])
    # The raw row is kept as read, so nothing is lost.
    record = con.execute("SELECT record FROM _quarantine WHERE row_number = 2").fetchone()[0]
    assert cases[0][0]["uscc"] in record


RECORD_CASES = [
    (
        "penalties",
        {"published_on": "2020-01-01", "decided_on": "2020-02-01"},
        "published_on: before decided_on",
    ),
    (
        "penalties",
        {"penalty_kinds": "fine;flogging"},
        "penalty_kinds: contains a value not in the allowed list",
    ),
    ("penalties", {"fine_yuan": "a lot"}, "fine_yuan: not a valid double"),
    ("penalties", {"fine_yuan": "-5"}, "fine_yuan: negative"),
    ("penalties", {"procedure": "simple"}, "simple-procedure decisions are not published"),
    ("penalties", {"publicity_end": ""}, "publicity_end: required when published"),
    ("penalties", {"violation_type": "jaywalking"}, "violation_type: not an allowed value"),
    ("penalties", {"uscc": "92440304MA5XXXXXXX"}, "uscc: unknown household"),
    ("penalties", {"decision_no": ""}, "decision_no: required"),
    (
        "abnormal_status",
        {"marked_on": "2024-07-05", "restored_on": "2024-07-01"},
        "restored_on: before marked_on",
    ),
    ("abnormal_status", {"cause": "bad_luck"}, "cause: not an allowed value"),
    (
        "annual_reports",
        {"report_year": "2023", "filed_on": "2023-12-01"},
        "filed_on: before the report year ended",
    ),
    ("annual_reports", {"report_year": "twenty"}, "report_year: not a valid integer"),
    ("annual_reports", {"filed_on": "", "published": "true"}, "never filed cannot be published"),
    ("annual_reports", {"published": "maybe"}, "published: not a valid boolean"),
    (
        "serious_dishonesty",
        {"listed_on": "2024-01-01", "removed_on": "2023-01-01"},
        "removed_on: before listed_on",
    ),
    (
        "spot_checks",
        {"checked_on": "2024-03-01", "published_on": "2024-02-01"},
        "published_on: before checked_on",
    ),
    ("spot_checks", {"result": "great"}, "result: not an allowed value"),
    ("registration_changes", {"change_type": "haircut"}, "change_type: not an allowed value"),
    ("registration_changes", {"changed_on": ""}, "changed_on: required"),
]


@pytest.mark.parametrize(
    ("table", "change", "reason"), RECORD_CASES, ids=[c[2][:40] for c in RECORD_CASES]
)
def test_every_record_rule_quarantines_with_its_reason(small_export, base, table, change, reason):
    warehouse, tmp, households = base
    where = "published_on IS NOT NULL" if table == "penalties" else "true"
    if table == "annual_reports" and "published" in change:
        where = "filed_on IS NOT NULL"
    [row] = _rows(small_export, table, where)
    row["uscc"] = households[0]["uscc"]
    bad = {**row, **change}
    export = tmp / f"e_{table}"
    _write_csv(export, table, [row, bad])
    [report] = ingest(export, warehouse, progress=False)
    assert (report.read, report.accepted, report.quarantined) == (2, 1, 1)
    con = duckdb.connect(str(warehouse), read_only=True)
    [(rownum, got)] = con.execute(
        "SELECT row_number, reason FROM _quarantine WHERE table_name = ?", [table]
    ).fetchall()
    assert rownum == 2 and reason in got


def test_duplicate_key_in_a_file_keeps_the_first(small_export, base):
    warehouse, tmp, households = base
    [row] = _rows(small_export, "penalties")
    row["uscc"] = households[0]["uscc"]
    _write_csv(tmp / "dup", "penalties", [row, {**row, "fine_yuan": "1"}])
    [report] = ingest(tmp / "dup", warehouse, progress=False)
    assert (report.accepted, report.quarantined) == (1, 1)
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT fine_yuan FROM penalties").fetchone()[0] == float(row["fine_yuan"])
    assert "duplicate key in file" in con.execute("SELECT reason FROM _quarantine").fetchone()[0]


def test_column_mismatch_is_refused_and_the_warehouse_is_unchanged(small_export, base):
    warehouse, tmp, households = base
    before = _snapshot(warehouse)
    rows = _rows(small_export, "penalties", limit=3)
    cols = [c for c in TABLES_BY_NAME["penalties"].column_names if c != "fine_yuan"] + [
        "fine_amount"
    ]
    export = tmp / "mismatch"
    _write_csv(export, "households", households)  # a good file in the same run
    _write_csv(export, "penalties", rows, columns=cols)
    with pytest.raises(ExportError) as err:
        ingest(export, warehouse, progress=False)
    assert "missing ['fine_yuan']" in str(err.value) and "unexpected ['fine_amount']" in str(
        err.value
    )
    assert _snapshot(warehouse) == before


def test_a_failure_midway_rolls_the_whole_run_back(small_export, base):
    warehouse, tmp, _ = base
    before = _snapshot(warehouse)
    export = tmp / "broken"
    export.mkdir()
    shutil.copy(small_export / "households.parquet", export / "households.parquet")
    shutil.copy(small_export / "penalties.parquet", export / "penalties.parquet")
    data = (export / "penalties.parquet").read_bytes()
    (export / "penalties.parquet").write_bytes(
        data[:4] + b"\0" * 512 + data[-8:]
    )  # header/footer, bad body
    with pytest.raises(Exception):  # noqa: B017 - any reader error will do; the point is the rollback
        ingest(export, warehouse, progress=False)
    assert _snapshot(warehouse) == before


def test_reingest_adds_nothing_and_counts_balance(small_export, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    first = ingest(small_export, warehouse, progress=False)
    snap = _snapshot(warehouse)
    for r in first:
        assert r.read == r.accepted + r.quarantined
        n = duckdb.sql(f"SELECT count(*) FROM '{small_export}/{r.table}.parquet'").fetchall()[0][0]
        assert r.read == n
    assert {r.table for r in first} == {t.name for t in TABLES}
    second = ingest(small_export, warehouse, progress=False)
    assert all(r.skipped and r.inserted == 0 for r in second)
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT count(*) FROM _loads").fetchone()[0] == len(TABLES)
    con.close()
    # only _loads bookkeeping may differ; record tables are identical
    assert _snapshot(warehouse) == snap


def test_a_later_export_replaces_rows_by_key(small_export, base):
    warehouse, tmp, households = base
    [row] = _rows(small_export, "abnormal_status", "restored_on IS NULL")
    row["uscc"] = households[0]["uscc"]
    _write_csv(tmp / "v1", "abnormal_status", [row])
    ingest(tmp / "v1", warehouse, progress=False)
    restored = {**row, "restored_on": "2026-09-01", "restore_reason": "address_registered"}
    _write_csv(tmp / "v2", "abnormal_status", [restored])
    [report] = ingest(tmp / "v2", warehouse, progress=False)
    assert (report.inserted, report.replaced) == (0, 1)
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute(
        "SELECT count(*), max(restored_on)::VARCHAR FROM abnormal_status"
    ).fetchone() == (1, "2026-09-01")


def test_chinese_text_round_trips_through_csv(small_export, base):
    warehouse, _, households = base
    con = duckdb.connect(str(warehouse), read_only=True)
    stored = dict(con.execute("SELECT uscc, address FROM households").fetchall())
    for h in households:
        assert stored[h["uscc"]] == h["address"]
    assert any("省" in a for a in stored.values())


def test_missing_folder_and_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        ingest(tmp_path / "nope", tmp_path / "w.duckdb", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no record files"):
        ingest(tmp_path / "empty", tmp_path / "w.duckdb", progress=False)
