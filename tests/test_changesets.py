"""Change sets: validated and quarantined like exports, atomic, idempotent, in date order;
corrections and late entries never reach a snapshot as known before they arrived."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.pit import feature_sql
from records.changeset import ChangeSetError, seal, write_changeset
from records.ingest import ExportError, ingest
from records.schema import PENALTIES, arrow_schema
from tests.test_ingest import _snapshot

T = date(2026, 6, 30)
FIX_DAY = date(2026, 8, 1)


def _penalty(uscc: str, no: str, published: date, fine: float = 1000.0) -> dict:
    return {
        "uscc": uscc,
        "decision_no": no,
        "decided_on": published,
        "procedure": "ordinary",
        "published_on": published,
        "violation_type": "pricing",
        "penalty_kinds": "fine",
        "fine_yuan": fine,
        "publicity_end": date(published.year + 3, published.month, published.day),
        "repaired_on": None,
        "withdrawn_on": None,
    }


def _penalties(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=arrow_schema(PENALTIES))


@pytest.fixture()
def base(small_export, tmp_path):
    """A warehouse with three operating households and one published penalty."""
    hh = pq.read_table(small_export / "households.parquet")
    hh = hh.filter(pa.compute.equal(hh.column("status"), "operating")).slice(0, 3)
    codes = hh.column("uscc").to_pylist()
    export = tmp_path / "base"
    export.mkdir()
    pq.write_table(hh, export / "households.parquet")
    pq.write_table(
        _penalties(_penalty(codes[0], "P-1", date(2026, 1, 10))), export / "penalties.parquet"
    )
    wh = tmp_path / "wh.duckdb"
    ingest(export, wh, progress=False)
    return wh, codes, tmp_path


def _row(wh: Path, uscc: str, as_of: date, known_at: date | None = None) -> dict:
    con = duckdb.connect(str(wh), read_only=True)
    df = con.sql(feature_sql(as_of, known_at=known_at)).df()
    con.close()
    row = df[df.uscc == uscc].iloc[0].to_dict()
    return {k: None if v != v else v for k, v in row.items()}  # NaN == NaN here


def test_a_correction_after_t_leaves_the_snapshot_at_t_unchanged(base):
    wh, codes, tmp = base
    before = _row(wh, codes[0], T)
    fixed = _penalty(codes[0], "P-1", date(2026, 1, 10), fine=150_000.0)
    ingest(
        write_changeset(tmp / "cs", FIX_DAY, {"penalties": _penalties(fixed)}), wh, progress=False
    )
    assert _row(wh, codes[0], T, known_at=T) == before
    now = _row(wh, codes[0], T)
    assert now["penalty_fines_yuan"] == 150_000.0 and before["penalty_fines_yuan"] == 1000.0
    assert now["penalty_max_severity"] > before["penalty_max_severity"]


def test_a_late_entry_is_invisible_as_known_before_it_arrived(base):
    wh, codes, tmp = base
    late = _penalty(codes[1], "P-2", date(2026, 5, 1))
    ingest(
        write_changeset(tmp / "cs", FIX_DAY, {"penalties": _penalties(late)}), wh, progress=False
    )
    assert _row(wh, codes[1], T, known_at=T)["penalties_1y"] == 0
    assert _row(wh, codes[1], T, known_at=FIX_DAY)["penalties_1y"] == 1
    assert _row(wh, codes[1], T)["penalties_1y"] == 1


def test_a_deleted_record_is_kept_as_known_before_its_deletion(base):
    wh, codes, tmp = base
    keys = pa.table({"decision_no": ["P-1"]})
    ingest(write_changeset(tmp / "cs", FIX_DAY, {}, {"penalties": keys}), wh, progress=False)
    assert _row(wh, codes[0], T)["penalties_1y"] == 0
    assert _row(wh, codes[0], T, known_at=T)["penalties_1y"] == 1
    con = duckdb.connect(str(wh), read_only=True)
    kept = con.execute(
        "SELECT known_to FROM penalties_history WHERE decision_no = 'P-1'"
    ).fetchall()
    assert kept == [(FIX_DAY,)]


def test_bad_rows_and_unknown_deletions_are_quarantined_the_rest_applied(base):
    wh, codes, tmp = base
    good = _penalty(codes[2], "P-3", date(2026, 7, 1))
    bad = {**_penalty(codes[2], "P-4", date(2026, 7, 1)), "violation_type": "nonsense"}
    cs = write_changeset(
        tmp / "cs",
        FIX_DAY,
        {"penalties": _penalties(good, bad)},
        {"penalties": pa.table({"decision_no": ["NO-SUCH"]})},
    )
    reports = ingest(cs, wh, progress=False)
    by_file = {r.file: r for r in reports}
    assert by_file["2026-08-01/penalties.parquet"].quarantined == 1
    assert by_file["2026-08-01/penalties.parquet"].inserted == 1
    assert by_file["2026-08-01/penalties.deleted.parquet"].quarantined == 1
    con = duckdb.connect(str(wh), read_only=True)
    reasons = dict(con.execute("SELECT file, reason FROM _quarantine").fetchall())
    assert reasons == {
        "2026-08-01/penalties.parquet": "violation_type: not an allowed value",
        "2026-08-01/penalties.deleted.parquet": "deletion: no current record with this key",
    }
    assert con.execute("SELECT count(*) FROM penalties WHERE decision_no = 'P-3'").fetchall() == [
        (1,)
    ]


def test_the_same_change_set_twice_changes_nothing(base):
    wh, codes, tmp = base
    cs = write_changeset(
        tmp / "cs", FIX_DAY, {"penalties": _penalties(_penalty(codes[1], "P-2", date(2026, 7, 2)))}
    )
    first = ingest(cs, wh, progress=False)
    state = _snapshot(wh)
    again = ingest(cs, wh, progress=False)
    assert _snapshot(wh) == state
    assert [r.skipped for r in again] == [True] and not first[0].skipped
    assert (again[0].read, again[0].accepted) == (first[0].read, first[0].accepted)


def _refused(cs: Path, wh: Path, match: str) -> None:
    state = _snapshot(wh)
    with pytest.raises((ChangeSetError, ExportError), match=match):
        ingest(cs, wh, progress=False)
    assert _snapshot(wh) == state


def test_out_of_order_and_altered_change_sets_are_refused(base):
    wh, codes, tmp = base
    rows = {"penalties": _penalties(_penalty(codes[1], "P-2", date(2026, 7, 2)))}
    ingest(write_changeset(tmp / "d2", FIX_DAY, rows), wh, progress=False)
    older = write_changeset(tmp / "d1", date(2026, 7, 31), rows)
    _refused(older, wh, r"change set 2026-07-31 is older than the last one applied \(2026-08-01\)")
    other = {"penalties": _penalties(_penalty(codes[1], "P-9", date(2026, 7, 2)))}
    _refused(
        write_changeset(tmp / "d2b", FIX_DAY, other), wh, "a different change set for 2026-08-01"
    )
    before_base = write_changeset(tmp / "d0", date(2026, 1, 1), {})
    _refused(before_base, wh, "older than")

    later = write_changeset(tmp / "d3", date(2026, 8, 2), other)
    pq.write_table(
        _penalties(_penalty(codes[1], "P-10", date(2026, 7, 2))), later / "penalties.parquet"
    )
    _refused(later, wh, "penalties.parquet differs from its manifest SHA-256")
    seal(later, date(2026, 8, 2))
    (later / "notes.txt").write_text("x")
    _refused(later, wh, r"not listed \['notes.txt'\]")
    (later / "notes.txt").unlink()
    manifest = json.loads((later / "manifest.json").read_text())
    (later / "manifest.json").write_text(json.dumps({**manifest, "date": "August"}))
    _refused(later, wh, "not a valid change-set manifest")


def test_a_change_set_with_wrong_columns_is_refused(base):
    wh, codes, tmp = base
    t = _penalties(_penalty(codes[1], "P-2", date(2026, 7, 2))).drop_columns(["fine_yuan"])
    _refused(write_changeset(tmp / "cs", FIX_DAY, {"penalties": t}), wh, r"missing \['fine_yuan'\]")


_KILL_AFTER_FIRST_TABLE = textwrap.dedent(
    """
    import logging, sys, threading
    from pathlib import Path
    from records.ingest import ingest

    class Freeze(logging.Handler):
        # Once the first table is written (not yet committed), say so and never go on.
        def emit(self, record):
            if "not yet committed" in record.getMessage():
                Path(sys.argv[3]).write_text("frozen")
                threading.Event().wait()

    logging.basicConfig(level=logging.INFO)
    logging.getLogger().addHandler(Freeze())
    ingest(Path(sys.argv[1]), Path(sys.argv[2]), progress=False)
    """
)


def test_a_change_set_killed_midway_leaves_the_warehouse_as_it_was(base, small_export):
    wh, codes, tmp = base
    more = pq.read_table(small_export / "households.parquet").slice(100, 50)
    rows = {
        "households": more,
        "penalties": _penalties(_penalty(codes[1], "P-2", date(2026, 7, 2))),
    }
    cs = write_changeset(tmp / "cs", FIX_DAY, rows)
    state = _snapshot(wh)
    marker = tmp / "frozen"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_AFTER_FIRST_TABLE, str(cs), str(wh), str(marker)],
        cwd=Path(__file__).parent.parent,
        env={**os.environ},
    )
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the ingest ended (rc {proc.returncode}) before freezing")
            _wait_a_little(proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _snapshot(wh) == state
    reports = ingest(cs, wh, progress=False)  # a rerun completes
    assert {r.table: r.inserted for r in reports} == {"households": 50, "penalties": 1}


def _wait_a_little(proc: subprocess.Popen) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=0.05)


def test_a_history_export_loads_only_into_an_empty_table_and_versions_must_not_overlap(
    base, small_export
):
    wh, codes, tmp = base
    hist = tmp / "hist"
    hist.mkdir()
    rows = [
        {
            **_penalty(codes[0], "H-1", date(2025, 1, 5)),
            "known_from": date(2025, 1, 5),
            "known_to": date(2025, 2, 1),
        },
        {
            **_penalty(codes[0], "H-1", date(2025, 1, 5), 9.0),
            "known_from": date(2025, 1, 20),
            "known_to": None,
        },
        {
            **_penalty(codes[0], "H-2", date(2025, 1, 5)),
            "known_from": date(2025, 1, 5),
            "known_to": None,
        },
    ]
    schema = (
        arrow_schema(PENALTIES)
        .append(pa.field("known_from", pa.date32()))
        .append(pa.field("known_to", pa.date32()))
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), hist / "penalties.parquet")
    with pytest.raises(ExportError, match="loads only into a table with no versions yet"):
        ingest(hist, wh, progress=False)
    hh = pq.read_table(small_export / "households.parquet")
    pq.write_table(hh, hist / "households.parquet")
    fresh = tmp / "fresh.duckdb"
    ingest(hist, fresh, progress=False)
    con = duckdb.connect(str(fresh), read_only=True)
    reasons = con.execute(
        "SELECT reason FROM _quarantine WHERE table_name = 'penalties' ORDER BY row_number"
    ).fetchall()
    assert reasons == [("known_to: overlaps the next version of this record",)]
    assert con.execute("SELECT decision_no FROM penalties ORDER BY 1").fetchall() == [
        ("H-1",),
        ("H-2",),
    ]
