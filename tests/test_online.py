"""The online store: what a publication holds, and that readers never mix two."""

from __future__ import annotations

import os
from datetime import date

import duckdb
import pytest

from features.pit import feature_sql
from online_store.publish import publish
from online_store.reader import CURRENT, KEEP_PREVIOUS, NoSnapshot, OnlineStore
from online_store.verification import FieldHasher, Verdict, normalise_text, verdict
from records.identity import normalise_id

SECRET = b"test-secret"


@pytest.fixture(scope="module")
def con(small_warehouse):
    c = duckdb.connect(str(small_warehouse), read_only=True)
    yield c
    c.close()


def test_a_publication_holds_status_hashes_and_features_but_no_readable_personal_data(
    con, tmp_path
):
    meta = publish(con, date(2026, 6, 30), tmp_path, SECRET)
    snap = OnlineStore(tmp_path).current()
    registered = con.execute(
        "SELECT count(*) FROM households WHERE registered_on <= DATE '2026-06-30'"
    ).fetchall()[0][0]
    operating = con.execute(f"SELECT count(*) FROM ({feature_sql(date(2026, 6, 30))})").fetchall()
    assert int(meta["households"]) == registered and int(meta["operating"]) == operating[0][0]
    raw = (tmp_path / os.readlink(tmp_path / CURRENT)).read_bytes()
    people = con.execute(
        "SELECT operator_name, address, operator_id_hmac FROM households LIMIT 300"
    ).fetchall()
    for name, address, id_hmac in people:
        for value in (name, address, id_hmac):
            assert value.encode() not in raw
    h = FieldHasher(SECRET)
    uscc, name = con.execute(
        "SELECT uscc, operator_name FROM households WHERE registered_on <= DATE '2026-06-30' LIMIT 1"
    ).fetchall()[0]
    assert verdict(h.field("operator", name), snap.get(uscc).operator_h) is Verdict.MATCH
    assert verdict(h.field("address", name), snap.get(uscc).address_h) is Verdict.MISMATCH


def test_a_reader_keeps_its_snapshot_while_a_new_one_is_published(con, tmp_path):
    publish(con, date(2026, 6, 30), tmp_path, SECRET)
    store = OnlineStore(tmp_path)
    held = store.current()
    uscc = held._con.execute("SELECT uscc FROM subjects WHERE status = 'operating'").fetchone()[0]
    before = held.get(uscc)
    for month_end in (date(2026, 7, 31), date(2026, 8, 31), date(2026, 9, 30)):
        publish(con, month_end, tmp_path, SECRET)
    assert held.as_of == "2026-06-30" and held.get(uscc) == before  # old file still whole
    assert store.current().as_of == "2026-09-30"
    assert len(list(tmp_path.glob("snap-*.sqlite"))) == 1 + KEEP_PREVIOUS
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".link-*"))


def test_a_rebuild_of_an_earlier_day_keeps_the_file_it_replaced(con, tmp_path):
    """Old files go by when they were published: a rebuild of an earlier as-of date
    must keep the file readers were answering from a moment before."""
    publish(con, date(2026, 9, 30), tmp_path, SECRET)
    publish(con, date(2026, 8, 31), tmp_path, SECRET)
    replaced = os.readlink(tmp_path / CURRENT)
    publish(con, date(2026, 7, 31), tmp_path, SECRET)
    kept = {p.name for p in tmp_path.glob("snap-*.sqlite")}
    assert kept == {replaced, os.readlink(tmp_path / CURRENT)}


def test_nothing_published_is_a_clear_error(tmp_path):
    with pytest.raises(NoSnapshot, match="credref publish"):
        OnlineStore(tmp_path).current()


@pytest.mark.parametrize(
    "a, b",
    [
        ("王伟", " 王 伟\u3000"),
        ("Ｌｉ Ｍｉｎｇ", "li ming"),
        ("café", "cafe\u0301"),
        ("深圳市福田区１２号", "深圳市福田区12号"),
    ],
)
def test_normalisation_makes_equivalent_spellings_equal(a, b):
    assert normalise_text(a) == normalise_text(b)


def test_id_numbers_normalise_to_the_form_the_warehouse_hashes():
    from records.identity import id_hmac

    assert normalise_id(" １１０１０５１９４９１２３１００２ｘ ") == "11010519491231002X"
    assert FieldHasher(SECRET).id_number("11010519491231002x").hex() == id_hmac(
        "11010519491231002X", SECRET
    )
    assert normalise_text("王伟") != normalise_text("王伟伟")
