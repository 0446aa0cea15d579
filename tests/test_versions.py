"""Knowledge time: a base export plus daily change sets gives the state of the full
export, and features as known at K equal those of the generator's export as known at K."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from stdnum.cn import uscc as uscc_check

from features.pit import feature_sql
from records.ingest import ingest
from records.schema import TABLES
from tests.conftest import END, FEED_DAYS, living_export
from tests.helpers import assert_frames_equal

FEED_START = END - timedelta(days=FEED_DAYS - 1)


def _differences(a: Path, b: Path) -> dict[str, tuple[int, int]]:
    """Rows of current versions in ``a`` and not ``b``, and the reverse, per table."""
    con = duckdb.connect()
    con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
    con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
    out = {}
    for t in TABLES:
        cols = ", ".join(f'"{c}"' for c in t.column_names)
        counts = [
            con.execute(
                f'SELECT count(*) FROM (SELECT {cols} FROM {x}."{t.name}" '
                f'EXCEPT ALL SELECT {cols} FROM {y}."{t.name}")'
            ).fetchall()[0][0]
            for x, y in (("a", "b"), ("b", "a"))
        ]
        out[t.name] = (counts[0], counts[1])
    con.close()
    return out


def _features(warehouse: Path, as_of: date, known_at: date | None = None):
    con = duckdb.connect(str(warehouse), read_only=True)
    df = con.sql(feature_sql(as_of, known_at=known_at)).df()
    con.close()
    return df


@pytest.fixture(scope="module")
def at_end(tmp_path_factory) -> Path:
    """The generator's own export as known at the end, ingested."""
    root = tmp_path_factory.mktemp("at_end")
    wh = root / "wh.duckdb"
    ingest(living_export(root / "export"), wh, progress=False)
    return wh


def test_the_feed_changes_every_kind_of_record(living_warehouse):
    con = duckdb.connect(str(living_warehouse), read_only=True)
    kinds = dict(con.execute("SELECT kind, count(*) FROM _loads GROUP BY kind").fetchall())
    changed = con.execute(
        "SELECT sum(inserted), sum(replaced), sum(deleted), count(DISTINCT known_on) "
        "FROM _loads WHERE kind = 'changeset'"
    ).fetchall()[0]
    days = con.execute("SELECT count(*) FROM _changesets").fetchall()[0][0]
    # records entered in error and deleted: past versions with no current one
    deleted = {
        name: con.execute(
            f"SELECT count(*) FROM {name}_history h WHERE NOT EXISTS "
            f"(SELECT 1 FROM {name} c WHERE {' AND '.join(f'c.{k} = h.{k}' for k in key)})"
        ).fetchall()[0][0]
        for name, key in (
            ("penalties", ("decision_no",)),
            ("abnormal_status", ("uscc", "marked_on", "cause")),
        )
    }
    corrected = con.execute(
        "SELECT count(*) FROM penalties_history h JOIN penalties c USING (decision_no) "
        "WHERE h.fine_yuan IS DISTINCT FROM c.fine_yuan"
    ).fetchall()[0][0]
    con.close()
    assert kinds["history_export"] == len(TABLES)
    assert days == FEED_DAYS
    inserted, replaced, _, _ = changed
    assert inserted > 0 and replaced > 0
    assert min(deleted.values()) > 0 and corrected > 0


def test_base_plus_change_sets_equals_the_export_at_the_end(living_warehouse, at_end):
    diffs = _differences(living_warehouse, at_end)
    assert diffs == {t.name: (0, 0) for t in TABLES}
    for as_of in (date(2024, 6, 30), END - timedelta(days=3), END):
        assert_frames_equal(_features(living_warehouse, as_of), _features(at_end, as_of))


def test_a_plain_base_plus_change_sets_equals_it_too(tmp_path, at_end):
    export = living_export(tmp_path / "plain", feed_days=5)
    wh = tmp_path / "wh.duckdb"
    ingest(export, wh, progress=False)
    for day in sorted((export / "feed").iterdir()):
        ingest(day, wh, progress=False)
    assert _differences(wh, at_end) == {t.name: (0, 0) for t in TABLES}


@pytest.mark.parametrize(
    "known_at",
    [
        date(2025, 6, 30),  # long before the feed: the base export's own history
        FEED_START - timedelta(days=1),  # the base export's day
        FEED_START + timedelta(days=6),  # inside the feed
        END - timedelta(days=1),
    ],
    ids=str,
)
def test_features_as_known_at_k_equal_the_export_as_known_at_k(
    living_warehouse, tmp_path, known_at
):
    export = living_export(tmp_path / "export", known_at=known_at)
    wh = tmp_path / "wh.duckdb"
    ingest(export, wh, progress=False)
    for as_of in (known_at, date(2025, 3, 31)):
        if as_of > known_at:
            continue
        ours = _features(living_warehouse, as_of, known_at=known_at)
        theirs = _features(wh, as_of)
        assert len(ours) > 1000
        assert_frames_equal(ours, theirs)


def test_as_known_then_differs_from_as_known_now(living_warehouse):
    """The domain has corrections and late entries, so knowledge time matters."""
    as_of = FEED_START + timedelta(days=2)
    then = _features(living_warehouse, as_of, known_at=as_of)
    now = _features(living_warehouse, as_of)
    merged = then.merge(now, on="uscc", how="outer", suffixes=("_then", "_now"), indicator=True)
    changed = (
        (merged["_merge"] != "both")
        | (merged["penalty_fines_yuan_then"] != merged["penalty_fines_yuan_now"])
        | (merged["abnormal_now_report_then"] != merged["abnormal_now_report_now"])
    )
    assert changed.sum() > 0


def test_a_plain_export_is_known_since_its_own_dates(small_warehouse):
    """Without knowledge time, as known at T is what is known now, for any T."""
    for as_of in (date(2023, 6, 30), date(2025, 12, 31)):
        assert_frames_equal(
            _features(small_warehouse, as_of, known_at=as_of), _features(small_warehouse, as_of)
        )


def test_an_old_warehouse_is_upgraded_in_place(tmp_path):
    from records.schema import HOUSEHOLDS
    from records.warehouse import connect

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    cols = ", ".join(f'"{c.name}" {c.type}' for c in HOUSEHOLDS.columns)
    con.execute(f"CREATE TABLE households ({cols})")
    con.execute(
        "INSERT INTO households (uscc, operator_name, registered_on, status) "
        "VALUES ('x', 'y', DATE '2020-02-03', 'operating')"
    )
    con.execute(
        "CREATE TABLE _loads (load_id VARCHAR, table_name VARCHAR, file VARCHAR, sha256 VARCHAR, "
        "read BIGINT, accepted BIGINT, quarantined BIGINT, inserted BIGINT, replaced BIGINT, "
        "loaded_at TIMESTAMP)"
    )
    con.close()
    con = connect(path)
    assert con.execute("SELECT known_from FROM households").fetchall() == [(date(2020, 2, 3),)]
    assert con.execute("SELECT count(*) FROM households_history").fetchall() == [(0,)]
    assert "kind" in [r[0] for r in con.execute("DESCRIBE _loads").fetchall()]
    con.close()


def test_history_lists_a_households_versions_without_personal_fields(living_warehouse, monkeypatch):
    from typer.testing import CliRunner

    from credref.cli.app import app

    con = duckdb.connect(str(living_warehouse), read_only=True)
    uscc, operator, address = con.execute(
        "SELECT h.uscc, c.operator_name, c.address FROM households_history h "
        "JOIN households c USING (uscc) ORDER BY h.uscc LIMIT 1"
    ).fetchall()[0]
    versions = con.execute(
        "SELECT (SELECT count(*) FROM households_history WHERE uscc = $1) "
        "+ (SELECT count(*) FROM households WHERE uscc = $1)",
        [uscc],
    ).fetchall()[0][0]
    con.close()
    monkeypatch.setenv("CREDREF_WAREHOUSE", str(living_warehouse))
    result = CliRunner().invoke(app, ["history", uscc])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "households" in line]
    assert len(lines) == versions >= 2
    assert "status=operating" in result.output
    assert operator not in result.output and address not in result.output
    unknown = "92" + "0" * 15
    unknown += uscc_check.calc_check_digit(unknown)  # valid, and no household's
    missing = CliRunner().invoke(app, ["history", unknown])
    assert missing.exit_code != 0 and "no record" in missing.output
    invalid = CliRunner().invoke(app, ["history", "92" + "0" * 16])
    assert invalid.exit_code == 2 and "not a valid unified social credit code" in invalid.output
