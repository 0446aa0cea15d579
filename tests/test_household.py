"""The household's own report: its dates are the legal-use policy's boundaries, its "then"
is what the refresh serves on that day, it holds nothing of anyone else, and it renders.

The dates are checked three ways: against the rules written here from DOMAIN.md (not
from ``records.policy``), by the record being counted on the eve and not on the day, and
by refreshing the online store to the day (the warehouse holding what "nothing else
changes" writes: reports filed on time, the listing's removal) and scoring the
publication as the service does: class and score equal the report's.
"""

from __future__ import annotations

import calendar
import importlib
import os
import re
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest
from starlette.testclient import TestClient

from features.catalogue import FEATURE_NAMES, REASON_EVIDENCE
from features.dataset import observed_through
from features.pit import feature_sql
from household.evidence import evidence
from household.outlook import as_the_rules_say, end_early
from household.render import to_html
from household.report import build_report
from online_store.reader import OnlineStore
from online_store.refresh import RefreshTask, refresh
from scoring.model import REASON_SEPARATOR, ScoringModel
from serving.keys import KeyStore
from tests.helpers import SECRET, copy_home, relate, service_env

CODES = [f"R0{k}" for k in range(1, 10)]
#: Penalty fields whose repair waits a year (DOMAIN.md §2), and kinds never repaired.
SLOW_REPAIR = {"food_safety", "drug_safety", "special_equipment"}
NEVER_REPAIRED = {"suspension_order", "licence_revocation", "practice_ban"}


def _years_later(d: date, years: int) -> date:
    """The first day a window of ``years`` from ``d`` no longer holds it."""
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February: the window holds it through the 28th
        return date(d.year + years, 3, 1)


def _months_later(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def expected_dates(con: duckdb.DuckDBPyConnection, uscc: str, e) -> tuple[date | None, date | None]:
    """The day a record stops counting and can end early, from DOMAIN.md's rules and the
    record's own row (written here, independently of records.policy)."""
    if e.kind == "registration":
        return e.dated + timedelta(days=1096), None  # 3 years of 365.25 days, then not recent
    if e.kind == "change":
        return _years_later(e.dated, 2), None
    if e.kind == "annual_report":
        return date(int(e.reference) + 4, 7, 1), None  # out of the last three due years
    if e.kind == "abnormal_marking":
        return None, None  # until restored
    if e.kind == "spot_check":
        return _years_later(e.dated, 3), None
    if e.kind == "serious_list":
        (removed,) = con.execute(
            "SELECT removed_on FROM serious_dishonesty WHERE uscc = ? AND listed_on = ?",
            [uscc, e.dated],
        ).fetchone()
        return removed or _years_later(e.dated, 3), _years_later(e.dated, 1)
    end, kinds, field = con.execute(
        "SELECT publicity_end, penalty_kinds, violation_type FROM penalties WHERE decision_no = ?",
        [e.reference],
    ).fetchone()
    stops = end + timedelta(days=1)
    if NEVER_REPAIRED & set(kinds.split(";")):
        return stops, None
    return stops, _months_later(e.dated, 12 if field in SLOW_REPAIR else 6)


@pytest.fixture(scope="module")
def model(service_home) -> ScoringModel:
    (guide,) = service_home.glob("mlartifacts/**/scoring_model/guide.json")
    return ScoringModel.load(guide.parent)


@pytest.fixture(scope="module")
def warehouse(small_warehouse):
    con = duckdb.connect(str(small_warehouse), read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="module")
def as_of(warehouse) -> date:
    return observed_through(warehouse)


@pytest.fixture(scope="module")
def chosen(warehouse, as_of, model) -> dict[str, str]:
    """For each reason code the records bear today, a household with a record behind it:
    one served the code when the model serves it, else one whose features bear it."""
    feats = warehouse.sql(feature_sql(as_of)).df().set_index("uscc")
    served = model.score_frame(feats[list(FEATURE_NAMES)]).reasons
    ops = {">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b}
    out: dict[str, str] = {}
    for code in CODES:
        borne = np.zeros(len(feats), dtype=bool)
        for name, op, value in REASON_EVIDENCE[code]:
            borne |= ops[op](feats[name].to_numpy(dtype=float), value)
        candidates = [*served.index[served.str.contains(code)][:20], *feats.index[borne][:20]]
        for uscc in candidates:
            if any(e.reason == code for e in evidence(warehouse, uscc, as_of)):
                out[code] = uscc
                break
    return out


@pytest.fixture(scope="module")
def reports(warehouse, as_of, model, chosen):
    return {
        code: build_report(warehouse, u, as_of, model, "1", [], "https://review.example/")
        for code, u in chosen.items()
    }


def test_households_with_each_reason_are_reported(reports):
    # the check covers the reasons the small domain's households are served
    assert {"R01", "R02", "R03", "R04", "R05", "R06", "R09"} <= set(reports), sorted(reports)
    for code, r in reports.items():
        assert r.score is not None and r.risk_class in "ABCD"
        assert any(e.reason == code for e in r.evidence)
        # every reason served has a record behind it in the report
        assert set(r.reasons) - {"R00"} <= {e.reason for e in r.evidence}, (code, r.reasons)


def test_every_date_in_a_report_is_the_rules_date(warehouse, reports):
    checked = set()
    for r in reports.values():
        for e in r.evidence:
            stops, early = expected_dates(warehouse, r.uscc, e)
            if early is not None:
                early = max(early, r.as_of)  # already possible: from today
                if stops is not None and early >= stops:
                    early = None  # repair would not end it sooner
            assert (e.stops_counting, e.ends_early_from) == (stops, early), (r.uscc, e)
            checked.add(e.kind)
    assert {"registration", "change", "annual_report", "penalty", "spot_check"} <= checked


@pytest.fixture(scope="module")
def assumed(small_warehouse, reports, tmp_path_factory) -> Path:
    """The warehouse as the reports assume it: for each reported household, what the rules
    say happens if nothing else changes (reports filed on time, the listing removed)."""
    wh = tmp_path_factory.mktemp("assumed") / "warehouse.duckdb"
    shutil.copy(small_warehouse, wh)
    con = duckdb.connect(str(wh))
    for r in reports.values():
        as_the_rules_say(con, r.uscc, r.as_of)
    con.close()
    return wh


def test_a_record_counts_on_the_eve_of_its_date_and_not_on_the_day(assumed, reports):
    con = duckdb.connect(str(assumed), read_only=True)
    for r in reports.values():
        for e in r.evidence:
            if e.stops_counting is None:
                continue
            same = (e.reason, e.kind, e.reference, e.dated)
            eve = evidence(con, r.uscc, e.stops_counting - timedelta(days=1))
            day = evidence(con, r.uscc, e.stops_counting)
            assert same in {(x.reason, x.kind, x.reference, x.dated) for x in eve}, (r.uscc, e)
            assert same not in {(x.reason, x.kind, x.reference, x.dated) for x in day}, (r.uscc, e)
    con.close()


def _served_on(wh: Path, online: Path, day: date, model: ScoringModel, usccs: list[str]) -> dict:
    """Refresh the online store to ``day`` and score these households from the publication,
    as the service does: uscc -> (score, class, reasons)."""
    refresh(RefreshTask(wh, None, online, SECRET, as_of=day, force=True))
    with OnlineStore(online).current() as snap:
        assert snap.day == day
        frame = snap.frame(usccs).set_index("uscc")
    op = frame[(frame.status == "operating") & frame[FEATURE_NAMES[0]].notna()]
    scored = model.score_frame(op[list(FEATURE_NAMES)])
    return {
        u: (int(s.score), s.risk_class, tuple(s.reasons.split(REASON_SEPARATOR)))
        for u, s in scored.iterrows()
    }


def test_the_class_then_is_what_the_refresh_serves_on_that_day(assumed, reports, model, tmp_path):
    """Each "then" of every report: the warehouse as the report assumes it (one world per
    early end, all households at once), refreshed to the day, scored from the publication."""
    # world 0: the stop days; world n: the n-th early end of each household
    worlds: dict[int, list] = {}
    for r in reports.values():
        early = [t for t in r.outlook if t.because != "stops"]
        for n, t in enumerate(early, start=1):
            worlds.setdefault(n, []).append((r, t))
        worlds.setdefault(0, []).extend((r, t) for t in r.outlook if t.because == "stops")
    compared = 0
    for n, cases in sorted(worlds.items()):
        wh = tmp_path / f"world{n}" / "warehouse.duckdb"
        wh.parent.mkdir()
        shutil.copy(assumed, wh)
        con = duckdb.connect(str(wh))
        for r, t in cases:
            if t.because != "stops":
                end_early(con, r.uscc, t.evidence[0], t.day)
        con.close()
        for day in sorted({t.day for _, t in cases}):
            usccs = sorted({r.uscc for r, t in cases if t.day == day})
            served = _served_on(wh, wh.parent / "online", day, model, usccs)
            for r, t in cases:
                if t.day == day:
                    got = served.get(r.uscc, (None, None, ()))
                    assert got == (t.score, t.risk_class, t.reasons), (r.uscc, t)
                    compared += 1
    assert compared >= 10 and len(worlds) >= 2  # stop days and early ends were both checked


def test_a_report_holds_nothing_of_another_household(warehouse, reports):
    everyone = {u for (u,) in warehouse.execute("SELECT uscc FROM households").fetchall()}
    personal = {
        v
        for row in warehouse.execute(
            "SELECT operator_name, address, name, operator_id_hmac FROM households"
        ).fetchall()
        for v in row
        if v and len(v) >= 3  # two characters occur in plain words: 向平 in 向平台
    }
    for r in reports.values():
        for lang in ("zh", "en"):
            page = to_html(r, lang)
            assert set(re.findall(r"9[0-9A-Z]{17}", page)) & everyone == {r.uscc}
            assert not [v for v in personal if v in page]  # not even its own operator's


# --- the command, on a served home: the query record, the files, a real browser --------


@pytest.fixture(scope="module")
def asked(service_home, tmp_path_factory):
    """A private served home where alipay verified (claiming a name) and scored one
    household through the service: its query record holds two requests."""
    home = copy_home(service_home, tmp_path_factory.mktemp("household") / "home")
    # a fresh audit store: the shared home's holds what other modules asked before
    for stale in home.glob("audit.sqlite*"):
        stale.unlink()
    saved = dict(os.environ)
    os.environ.update(service_env(home))
    try:
        import serving.service

        service = importlib.reload(serving.service)
        secret = KeyStore(home / "keys.sqlite").create("alipay", ["verify", "score"])[1]
        con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
        (uscc,) = con.execute(
            "SELECT uscc FROM households WHERE status = 'operating' ORDER BY uscc LIMIT 1 OFFSET 7"
        ).fetchone()
        con.close()
        relate(home, "alipay", [uscc])
        auth = {"Authorization": f"Bearer {secret}"}
        with TestClient(service.ReferenceService.to_asgi()) as client:
            v = client.post(
                "/v1/verify", json={"uscc": uscc, "operator_name": "欧阳假名"}, headers=auth
            )
            s = client.post("/v1/score", json={"uscc": uscc, "purpose": "onboarding"}, headers=auth)
        assert v.status_code == 200 and s.status_code == 200, (v.text, s.text)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return home, uscc


def _credref(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **service_env(home)}
    return subprocess.run(
        [sys.executable, "-m", "credref", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_writes_the_report_with_its_query_record_and_no_claimed_value(asked, tmp_path):
    home, uscc = asked
    done = _credref(home, "household", "report", uscc, "--lang", "en", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"{uscc} on " in done.stdout and "asked about 2 times" in done.stdout
    (html,) = tmp_path.glob("*.html")
    (pdf,) = tmp_path.glob("*.pdf")
    page = html.read_text()
    assert page.count("alipay") == 2 and "/v1/verify" in page and "/v1/score" in page
    assert "欧阳假名" not in page and "欧阳假名" not in done.stdout  # a claimed value is never kept
    printed = pdf.read_bytes()  # a whole document (its pages are compressed object streams)
    assert (
        printed.startswith(b"%PDF-") and printed.rstrip().endswith(b"%%EOF") and len(printed) > 5000
    )


@pytest.mark.parametrize(
    "args",
    [["household", "report", "92000000000000000X"], ["household", "report", "X", "--lang", "fr"]],
    ids=["an invalid code", "a language it does not speak"],
)
def test_a_wrong_request_is_one_line_and_exit_2(asked, args):
    home, _ = asked
    done = _credref(home, *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "92000000000000000X" not in done.stderr


def test_the_report_renders_in_headless_chromium_without_console_errors(reports, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,1400",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        for code, r in sorted(reports.items()):
            for lang in ("zh", "en"):
                page = tmp_path / f"{code}-{lang}.html"
                page.write_text(to_html(r, lang), encoding="utf-8")
                driver.get(page.as_uri())
                assert driver.find_element("tag name", "h1").text
                rows = driver.find_elements("css selector", "table tr")
                assert len(rows) > 10
                errors = [
                    m for m in driver.get_log("browser") if m["level"] in ("SEVERE", "WARNING")
                ]
                assert not errors, errors
    finally:
        driver.quit()
