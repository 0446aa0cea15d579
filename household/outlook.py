"""What a household's class and score would be on the days its records stop counting.

"If nothing else changes" is made exact: the household's own records, as known now, are
copied into a scratch DuckDB database; what the rules say will happen is written into
them (the serious list's removal after 3 years; the annual reports not yet due filed on
time, which is what "nothing else changes" asks of a household that keeps the rules);
and the feature SQL of every snapshot (``features.pit.feature_sql``) is run on that day
and scored by the champion. An early end (credit repair, early removal, a restoration)
is one more record change on its earliest day. The same functions applied to a whole
warehouse give the same answers (``tests/test_household.py`` refreshes to each date
and compares).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import duckdb

from features.catalogue import FEATURE_NAMES
from features.pit import feature_sql
from household.evidence import Evidence
from records import policy as P
from records.schema import TABLES
from scoring.model import REASON_SEPARATOR, ScoringModel

#: What every "then" assumes, said in the report beside it.
ASSUMPTION_EN = (
    "if nothing else changes: no new record, each annual report not yet due filed on time, "
    "the serious-list entry removed when the rule says"
)
ASSUMPTION_ZH = (
    "假设其他情况不变：无新记录、尚未到期的年度报告按时报送、严重违法失信名单按规定期满移出"
)


@dataclass(frozen=True)
class Then:
    """The household's standing on ``day``: ``because`` names what changed by then
    (``stops``: records stop counting; ``early``: one record ended early, on the
    earliest day the rules allow; ``restored``: a marking restored after acting)."""

    day: date
    because: str
    evidence: tuple[Evidence, ...]
    score: int | None
    risk_class: str | None
    reasons: tuple[str, ...]


def own_records(warehouse: duckdb.DuckDBPyConnection, uscc: str) -> duckdb.DuckDBPyConnection:
    """A scratch in-memory database holding only this household's current records, in
    tables of the warehouse's names (no other household's row ever enters it)."""
    scratch = duckdb.connect()
    for t in TABLES:
        rows = warehouse.sql(f'SELECT * FROM "{t.name}" WHERE uscc = $uscc', params={"uscc": uscc})
        rows = rows.to_arrow_table()
        scratch.register("source_rows", rows)
        scratch.execute(f'CREATE TABLE "{t.name}" AS SELECT * FROM source_rows')
        scratch.unregister("source_rows")
    return scratch


def as_the_rules_say(con: duckdb.DuckDBPyConnection, uscc: str, as_of: date) -> None:
    """Write into ``con`` what happens to this household's records if nothing else
    changes: every report whose filing period has not ended on ``as_of`` filed on time
    (content not published), every serious-list entry removed 3 years after listing."""
    t = f"DATE '{as_of.isoformat()}'"
    first_not_due = f"{P.last_due_report_year(t)} + 1"
    con.execute(
        f"""UPDATE annual_reports SET filed_on = make_date(report_year + 1, 1, 1)
        WHERE uscc = $uscc AND report_year >= {first_not_due} AND filed_on IS NULL""",
        {"uscc": uscc},
    )
    columns = [c.name for c in next(t for t in TABLES if t.name == "annual_reports").columns]
    values = {
        "uscc": "h.uscc",
        "report_year": "y.year",
        "filed_on": "make_date(CAST(y.year AS INT) + 1, 1, 1)",
        "published": "FALSE",
    }
    select = ", ".join(values.get(c, "NULL") for c in columns)
    con.execute(
        f"""INSERT INTO annual_reports ({", ".join(columns)})
        SELECT {select} FROM households h
        CROSS JOIN range(greatest({first_not_due}, year(h.registered_on)), year({t}) + 12) y(year)
        WHERE h.uscc = $uscc AND NOT EXISTS (
            SELECT 1 FROM annual_reports r WHERE r.uscc = h.uscc AND r.report_year = y.year)""",
        {"uscc": uscc},
    )
    con.execute(
        f"""UPDATE serious_dishonesty r SET removed_on = {P.serious_stops_counting()}
        WHERE uscc = $uscc AND removed_on IS NULL""",
        {"uscc": uscc},
    )


def end_early(con: duckdb.DuckDBPyConnection, uscc: str, e: Evidence, day: date) -> None:
    """Record the early end of one record on ``day``: a penalty's repair, a listing's
    early removal, a marking's restoration."""
    d = {"uscc": uscc, "day": day, "dated": e.dated, "ref": e.reference}
    if e.kind == "penalty":
        con.execute(
            "UPDATE penalties SET repaired_on = $day WHERE uscc = $uscc AND decision_no = $ref "
            "AND $dated = published_on",
            d,
        )
    elif e.kind == "serious_list":
        con.execute(
            "UPDATE serious_dishonesty SET removed_on = $day WHERE uscc = $uscc AND listed_on = $dated "
            "AND $ref = ''",
            d,
        )
    elif e.kind == "abnormal_marking":
        con.execute(
            "UPDATE abnormal_status SET restored_on = $day WHERE uscc = $uscc AND marked_on = $dated "
            "AND $ref = ''",
            d,
        )
    else:
        raise ValueError(f"a {e.kind} record does not end early")


def standing_on(
    con: duckdb.DuckDBPyConnection, uscc: str, day: date, model: ScoringModel
) -> tuple[int | None, str | None, tuple[str, ...]]:
    """Score, class and reasons of the household on ``day`` from the records in ``con``
    (None, None, () when it is not operating on that day)."""
    features = con.sql(feature_sql(day)).df()
    row = features[features.uscc == uscc]
    if row.empty:
        return None, None, ()
    scored = model.score_frame(row[list(FEATURE_NAMES)].reset_index(drop=True)).iloc[0]
    return int(scored.score), str(scored.risk_class), tuple(scored.reasons.split(REASON_SEPARATOR))


def _scenarios(
    evidence: list[Evidence], as_of: date
) -> list[tuple[date, str, tuple[Evidence, ...]]]:
    """The days worth telling: each day records stop counting (all of that day's together),
    each earliest early end, and a marking's restoration from tomorrow."""
    out: list[tuple[date, str, tuple[Evidence, ...]]] = []
    stops = sorted(
        {e.stops_counting for e in evidence if e.stops_counting and e.stops_counting > as_of}
    )
    for day in stops:
        out.append((day, "stops", tuple(e for e in evidence if e.stops_counting == day)))
    for e in evidence:
        if e.ends_early_from is not None:
            out.append((e.ends_early_from, "early", (e,)))
        elif e.kind == "abnormal_marking":
            out.append((as_of + timedelta(days=1), "restored", (e,)))
    return out


def outlook(
    warehouse: duckdb.DuckDBPyConnection,
    uscc: str,
    as_of: date,
    evidence: list[Evidence],
    model: ScoringModel,
) -> list[Then]:
    """The household's standing on each day worth telling (:func:`_scenarios`)."""
    out = []
    # one record (penalty, listing...) can stand behind two reasons: end it once
    unique = list({(e.kind, e.reference, e.dated): e for e in evidence}.values())
    for day, because, ended in _scenarios(unique, as_of):
        scratch = own_records(warehouse, uscc)
        try:
            as_the_rules_say(scratch, uscc, as_of)
            if because != "stops":
                end_early(scratch, uscc, ended[0], day)
            score, cls, reasons = standing_on(scratch, uscc, day, model)
        finally:
            scratch.close()
        out.append(Then(day, because, ended, score, cls, reasons))
    return sorted(out, key=lambda t: (t.day, t.because))


def now_standing(
    warehouse: duckdb.DuckDBPyConnection, uscc: str, as_of: date, model: ScoringModel
) -> tuple[int | None, str | None, tuple[str, ...]]:
    """The household's standing on ``as_of`` from its records as known now."""
    scratch = own_records(warehouse, uscc)
    try:
        return standing_on(scratch, uscc, as_of, model)
    finally:
        scratch.close()
