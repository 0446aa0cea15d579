"""A household's objection, through the real server, the real client and the feed: opened
at the counter, marked on the reason it affects in every answer, told to the watching
platform, resolved by a second person both ways (rejected: the marker goes; upheld: the
record corrected by a change set and the answer recomputed), replayed as it was, and the
household's statement kept in the domain."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from client.api import CredrefClient
from household.evidence import evidence
from online_store.refresh import RefreshTask, refresh
from records.changeset import write_changeset
from records.ingest import ingest
from serving.keys import KeyStore
from tests.helpers import (
    SECRET,
    SERVICE_AS_OF,
    copy_home,
    relate,
    service_env,
    start_server,
    stop_server,
    wait_ready,
)

STATEMENT = "本人已缴清罚款并完成整改，对该记录有异议"
pytestmark = pytest.mark.slow


def _credref(home: Path, *args: str):
    """The command, in this process (the suite's time: no interpreter start per call)."""
    from typer.testing import CliRunner

    from credref.cli.app import app

    result = CliRunner().invoke(app, list(args), env=service_env(home))
    result.returncode = result.exit_code
    return result


@pytest.fixture(scope="module")
def home(service_home, tmp_path_factory) -> Path:
    return copy_home(service_home, tmp_path_factory.mktemp("objections") / "home")


@pytest.fixture(scope="module")
def server(home, tmp_path_factory):
    log = tmp_path_factory.mktemp("objections-log") / "server.log"
    proc, url = start_server(home, log, workers=1)
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def api(home, server):
    secret = KeyStore(home / "keys.sqlite").create("alipay", ["verify", "score", "watch"])[1]
    relate(home, "alipay")
    with CredrefClient(server, secret) as client:
        yield client


def _penalised(home: Path, api: CredrefClient) -> tuple[str, str]:
    """A household served R06 whose one penalty in publicity stands behind it, and the
    penalty's decision number."""
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        codes = [
            u
            for (u,) in con.execute(
                "SELECT uscc FROM penalties GROUP BY uscc HAVING count(*) = 1 ORDER BY uscc"
            ).fetchall()
        ]
        for uscc in codes:
            found = [e for e in evidence(con, uscc, SERVICE_AS_OF) if e.kind == "penalty"]
            if len(found) == 1 and found[0].reason == "R06":
                answer = api.score(uscc)
                if "R06" in [r["code"] for r in answer.get("reasons", [])]:
                    return uscc, found[0].reference
    finally:
        con.close()
    raise AssertionError("no household served R06 for its one penalty")


def _marks(answer: dict) -> dict[str, bool]:
    return {r["code"]: r["under_objection"] for r in answer["reasons"]}


def _opened(home: Path, uscc: str, decision: str, by: str) -> str:
    done = _credref(
        home, "objection", "open", uscc, "--record", f"penalty:{decision}", "--by", by,
        "--statement", STATEMENT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (found,) = re.findall(r"objection (obj_[0-9a-f]+) open", done.stdout)
    return found


def test_an_objection_is_marked_told_resolved_both_ways_and_replayed(home, api, tmp_path):
    uscc, decision = _penalised(home, api)
    api.watch([uscc])
    before = api.score(uscc)
    assert not any(_marks(before).values())

    first = _opened(home, uscc, decision, "clerk-a")
    disputed = api.score(uscc)
    assert _marks(disputed)["R06"] is True
    assert [c for c, m in _marks(disputed).items() if m] == ["R06"]  # only the one it affects
    events = list(api.all_changes())
    assert [(e["kind"], e["objection"]) for e in events] == [("objection_opened", first)]
    assert [r["code"] for r in events[0]["reasons"]] == ["R06"]

    # four eyes: the person who registered it cannot resolve it
    same = _credref(
        home, "objection", "resolve", first, "--outcome", "rejected", "--by", " Clerk-A"
    )
    assert same.returncode == 2 and "four eyes" in same.stderr
    assert _marks(api.score(uscc))["R06"] is True
    rejected = _credref(home, "objection", "resolve", first, "--outcome", "rejected", "--by", "b")
    assert rejected.returncode == 0, rejected.stderr
    after = api.score(uscc)
    assert not any(_marks(after).values()) and "R06" in _marks(after)  # the record stands
    told = list(api.all_changes())
    assert (told[-1]["kind"], told[-1]["outcome"]) == ("objection_resolved", "rejected")

    # each answer replays as it was given: marked while open, not before nor after
    for answer in (before, disputed, after):
        replayed = _credref(home, "audit", "replay", answer["request_id"])
        assert replayed.returncode == 0 and "objected" in replayed.stdout, replayed.stdout

    # upheld: the record corrected through a change set, the answer recomputed
    second = _opened(home, uscc, decision, "clerk-a")
    assert _marks(api.score(uscc))["R06"] is True
    while_open = _credref(home, "household", "report", uscc, "--out", str(tmp_path / "open"))
    assert while_open.returncode == 0, while_open.stderr
    (page,) = (tmp_path / "open").glob("*.html")
    assert re.search(r"R06[^<]*</td>\s*<td[^>]*>✓ （标注异议中）", page.read_text())
    upheld = _credref(home, "objection", "resolve", second, "--outcome", "upheld", "--by", "b")
    assert upheld.returncode == 0, upheld.stderr
    _withdraw(home, decision, tmp_path)
    corrected = api.score(uscc)
    assert "R06" not in _marks(corrected) and not any(_marks(corrected).values())
    kinds = [(e["kind"], e.get("outcome")) for e in api.all_changes()]
    assert kinds[-2:] == [("objection_opened", None), ("objection_resolved", "upheld")]

    # the statement stays in the domain: the household's report shows it, platforms never
    everything = str([before, disputed, after, corrected, *api.all_changes()])
    assert STATEMENT not in everything and STATEMENT not in (
        home / "audit.sqlite"
    ).read_bytes().decode("utf-8", "replace")
    listed = _credref(home, "objection", "list", uscc)
    assert first in listed.stdout and second in listed.stdout and "upheld" in listed.stdout
    report = _credref(home, "household", "report", uscc, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    (page,) = (tmp_path / "report").glob("*.html")
    assert STATEMENT in page.read_text() and "异议成立" in page.read_text()


def _withdraw(home: Path, decision: str, tmp_path: Path) -> None:
    """The regulator's correction: the decision withdrawn on the served day, learnt in
    a change set, the warehouse and the publication refreshed as the daily job does."""
    wh = home / "warehouse.duckdb"
    con = duckdb.connect(str(wh), read_only=True)
    try:
        row = con.sql(
            f"SELECT * EXCLUDE (known_from) FROM penalties WHERE decision_no = '{decision}'"
        ).to_arrow_table()
        (known,) = con.execute("SELECT max(known_from) FROM penalties").fetchone()
    finally:
        con.close()
    i = row.schema.get_field_index("withdrawn_on")
    row = row.set_column(i, "withdrawn_on", pa.array([SERVICE_AS_OF], pa.date32()))
    day = date.fromordinal(known.toordinal() + 1)
    folder = write_changeset(tmp_path / "feed" / day.isoformat(), day, {"penalties": row})
    ingest(folder, wh, progress=False)
    refresh(RefreshTask(wh, None, home / "online", SECRET, as_of=SERVICE_AS_OF, force=True))


def test_an_objection_to_a_record_that_does_not_count_is_refused_in_one_line(home, api):
    uscc, _ = _penalised(home, api)
    done = _credref(
        home, "objection", "open", uscc, "--record", "penalty:no-such-decision", "--by", "a"
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "no-such-decision" not in done.stderr and "Traceback" not in done.stderr


def test_a_class_event_marks_the_reasons_an_open_objection_disputes(tmp_path):
    """The feed's class events carry the marker as score answers do, only while the
    objection is open, only on the reasons the disputed record stands behind."""
    from scoring.model import reason_details
    from serving.events import _mark_disputed
    from serving.objections import ObjectionStore, Told

    store = ObjectionStore(tmp_path / "watch.sqlite")
    told = Told(SERVICE_AS_OF, "p", "1")
    code = "91110000600037341L"
    opened = store.open(code, ("penalty", "D-1", "2026-01-01"), ["R06"], "", "clerk-a", told)

    def event() -> dict:
        found = {code: [("class_changed", {"reasons": reason_details(["R06", "R01"])})]}
        _mark_disputed(found, store)
        return {r["code"]: r["under_objection"] for r in found[code][0][1]["reasons"]}

    assert event() == {"R06": True, "R01": False}
    store.resolve(opened.id, "rejected", "clerk-b", told)
    assert event() == {"R06": False, "R01": False}
