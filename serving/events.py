"""Change-feed events: what a watched household's answer did between two publications.

Each event kind is one rule below (:data:`RULES`), comparing the household's last answer
(as events were last derived, kept by :class:`serving.watch.WatchStore`) with its answer
from the current publication and the served model. :func:`derive_events` runs after each
daily refresh and after a promotion (``credref refresh``, ``credref promote``); it is
idempotent per (publication, model version), so a rerun after a kill adds nothing twice.

Events carry codes, classes, statuses and reason codes with their guidance, never a
record: a penalty in publicity is told by its reason code only. A class change says its
``cause``: ``record`` (a record of the household was learnt or changed, a deadline passed)
or ``window`` (only the days passing: its age or a record's age entered a new band).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.catalogue import FEATURE_NAMES, SEVERE_PENALTY
from features.elapsed import CALENDAR, ELAPSED
from online_store.reader import STORED_FEATURES, OnlineStore, Snapshot, mirror_path
from scoring.model import ScoringModel, encode, reason_details
from scoring.served import ServedModel
from serving.objections import ObjectionStore
from serving.state import Postgres
from serving.watch import Answer, WatchStore

#: Penalty severity from which a new penalty is told as R07 rather than R06 (R07's claim).
SEVERE = SEVERE_PENALTY
NOT_REGISTERED = "not_registered"  # a record withdrawn as entered in error
#: From this many households, reading the Parquet mirror (a scan of the whole register)
#: is quicker than looking each up in SQLite (a watch request's 1,000 are not).
MIRROR_FROM = 20_000

Detail = dict | None
#: A rule: the event's detail from one answer to the next, or None for no event.
Rule = Callable[[Answer, Answer], Detail]
#: Each household's (kind, detail) events; what adds the reasons to its class events.
Found = dict[str, list[tuple[str, dict]]]
Explain = Callable[[Found], None]


def _status_changed(old: Answer, new: Answer) -> Detail:
    return {"from": old.status, "to": new.status} if new.status != old.status else None


def _class_moved(old: Answer, new: Answer) -> bool:
    # entering or leaving operation is a status event, not a class event
    return None not in (old.risk_class, new.risk_class) and old.risk_class != new.risk_class


def _class_changed(old: Answer, new: Answer) -> Detail:
    if not _class_moved(old, new) or old.model_version != new.model_version:
        return None
    return {"from": old.risk_class, "to": new.risk_class}


def _model_changed(old: Answer, new: Answer) -> Detail:
    """A new champion moved the household's class (told only when the class moves)."""
    if not _class_moved(old, new) or old.model_version == new.model_version:
        return None
    return {"from": old.risk_class, "to": new.risk_class}


def _flag(name: str, to: int, reason: str | None) -> Rule:
    """A flag turning to ``to`` (marked, listed: 1; restored, removed: 0)."""

    def rule(old: Answer, new: Answer) -> Detail:
        before, after = getattr(old, name), getattr(new, name)
        if before is None or after is None or before == after or after != to:
            return None
        return {"reason": reason_details([reason])[0]} if reason else {}

    return rule


def _penalty_in_publicity(old: Answer, new: Answer) -> Detail:
    """One more penalty in publicity, told by its reason code only."""
    if old.penalties is None or new.penalties is None or new.penalties <= old.penalties:
        return None
    severe = (new.severity or 0) >= SEVERE and (new.severity or 0) > (old.severity or 0)
    return {"reason": reason_details(["R07" if severe else "R06"])[0]}


#: Every event kind and its rule, in the order a household's events of one day are given.
RULES: tuple[tuple[str, Rule], ...] = (
    ("status_changed", _status_changed),
    ("abnormal_marked", _flag("abnormal", 1, "R05")),
    ("abnormal_restored", _flag("abnormal", 0, None)),
    ("serious_listed", _flag("serious", 1, "R08")),
    ("serious_removed", _flag("serious", 0, None)),
    ("penalty_in_publicity", _penalty_in_publicity),
    ("class_changed", _class_changed),
    ("model_changed", _model_changed),
)
CLASS_KINDS = ("class_changed", "model_changed")


def events_between(old: Answer, new: Answer) -> list[tuple[str, dict]]:
    """The (kind, detail) events from one answer to the next."""
    out = []
    for kind, rule in RULES:
        detail = rule(old, new)
        if detail is not None:
            out.append((kind, detail))
    return out


# --- answers from a publication ----------------------------------------------------------


#: An answer table's columns: the code, then the :class:`Answer` fields, typed.
ANSWER_SCHEMA = pa.schema(
    [
        ("uscc", pa.string()),
        ("status", pa.string()),
        ("risk_class", pa.string()),
        ("abnormal", pa.int64()),
        ("serious", pa.int64()),
        ("penalties", pa.int64()),
        ("severity", pa.int64()),
        ("model_version", pa.string()),
    ]
)
FIELDS = Answer._fields


def answers(
    snap: Snapshot, codes: list[str], model: ScoringModel, version: str
) -> tuple[pa.Table, pd.DataFrame]:
    """Each found code's answer in this publication, as an Arrow table of
    :data:`ANSWER_SCHEMA` (a million are compared each day: columns, not objects), and
    the operating ones' features, by code (to explain a class change)."""
    df = watched_frame(snap, codes)
    op = ((df["status"] == "operating") & df["penalties_3y"].notna()).to_numpy()
    feats = df.loc[op, ["uscc", *FEATURE_NAMES]].set_index("uscc")
    cls = np.full(len(df), None, dtype=object)
    if op.any():
        cls[op] = model.score_frame(feats, with_reasons=False)["risk_class"].to_numpy()

    def number(name: str) -> np.ndarray:
        return pd.to_numeric(df[name], errors="coerce").fillna(0).to_numpy(dtype=np.int64)

    def when_operating(values: np.ndarray) -> pa.Array:
        return pa.array(values.astype(np.int64), mask=~op)

    abnormal = (number("abnormal_now_report") > 0) | (number("abnormal_now_unreachable") > 0)
    columns = [
        pa.array(df["uscc"].to_numpy(dtype=object), pa.string()),
        pa.array(df["status"].to_numpy(dtype=object), pa.string()),
        pa.array(cls, pa.string()),
        when_operating(abnormal),
        when_operating(number("serious_listed") > 0),
        when_operating(number("penalties_3y")),
        when_operating(number("penalty_max_severity")),
        pa.array([version] * len(df), pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=ANSWER_SCHEMA), feats


def answer_table(found: dict[str, Answer]) -> pa.Table:
    """Answers given as objects, as an answer table (for a source other than a
    publication: tests, tools)."""
    rows = [{"uscc": c, **a._asdict()} for c, a in found.items()]
    return pa.Table.from_pylist(rows, schema=ANSWER_SCHEMA)


_COMPARE = """
WITH n AS (
    SELECT w.uscc, coalesce(a.status, $gone) AS status, a.risk_class, a.abnormal, a.serious,
           a.penalties, a.severity, coalesce(a.model_version, $version) AS model_version
    FROM watched w LEFT JOIN now a ON a.uscc = w.uscc
)
SELECT n.*, b.uscc IS NOT NULL AS known, {old}
FROM n LEFT JOIN before b ON b.uscc = n.uscc
WHERE b.uscc IS NULL OR {differs}
ORDER BY n.uscc
"""


def compare(codes: list[str], now: pa.Table, before: pa.Table, version: str) -> list[tuple]:
    """The watched codes whose answer is new (no last one) or differs from the last one:
    (code, known, the answer now, the last one or None). A code missing from ``now`` is
    a record withdrawn (:data:`NOT_REGISTERED`)."""
    sql = _COMPARE.format(
        old=", ".join(f"b.{f} AS old_{f}" for f in FIELDS),
        differs=" OR ".join(f"n.{f} IS DISTINCT FROM b.{f}" for f in FIELDS),
    )
    import duckdb  # the refresh's step only (see watched_frame)

    con = duckdb.connect()
    try:
        con.register("watched", pa.table({"uscc": pa.array(codes, pa.string())}))
        con.register("now", now)
        con.register("before", before)
        rows = con.execute(sql, {"gone": NOT_REGISTERED, "version": version}).fetchall()
    finally:
        con.close()
    k = len(FIELDS)
    return [
        (r[0], r[k + 1], Answer(*r[1 : k + 1]), Answer(*r[k + 2 :]) if r[k + 1] else None)
        for r in rows
    ]


def watched_frame(snap: Snapshot, codes: list[str], on: date | None = None) -> pd.DataFrame:
    """What :meth:`Snapshot.frame` gives for ``codes``, read from the publication's
    Parquet mirror when it has one (columnar: a million households in a second or two,
    where SQLite's rows take ten), its calendar features rendered by the same definitions
    (:mod:`features.elapsed`) as SQL for the publication's day (or for ``on``)."""
    mirror = mirror_path(snap.path.parent, snap.name)
    if len(codes) < MIRROR_FROM or not mirror.exists():
        return snap.frame(codes, on)
    day = f"DATE '{(on or snap.day).isoformat()}'"
    exprs = {n: f"m.{n}" for n in STORED_FEATURES}
    exprs |= {e.name: replace(e, anchor_sql=f"m.{e.anchor}").sql(day) for e in ELAPSED}
    exprs[CALENDAR.name] = CALENDAR.sql(day)
    operating = f"m.status = 'operating' AND m.{STORED_FEATURES[0]} IS NOT NULL"
    # features only for households operating that day, as Snapshot.frame gives them
    columns = ", ".join(f"CASE WHEN {operating} THEN {x} END AS {n}" for n, x in exprs.items())
    import duckdb  # here: the service imports this module, and its workers need no DuckDB

    con = duckdb.connect()
    try:
        con.register("watched", pa.table({"uscc": pa.array(codes, pa.string())}))
        query = (
            f"SELECT m.uscc, m.status, {columns} FROM read_parquet('{mirror.as_posix()}') m "
            "SEMI JOIN watched w ON m.uscc = w.uscc"
        )
        df = con.sql(query).to_arrow_table().to_pandas()  # in no particular order
    finally:
        con.close()
    return df[["uscc", "status", *FEATURE_NAMES]]


@dataclass(frozen=True)
class EventReport:
    watched: int  # households watched by some platform on the day
    events: int  # events written, over all platforms
    by_kind: dict[str, int]
    skipped: bool = False  # already derived for this publication and model


def derive_events(
    store: WatchStore, snap: Snapshot, model: ScoringModel, version: str
) -> EventReport:
    """Compare every watched household's answer now with the last one, and write each
    watching platform its events (one transaction)."""

    last = store.derived_for()
    previous = (
        date.fromisoformat(last[:10]) if last else None
    )  # a publication's name starts with its day

    def read(codes: list[str]) -> tuple[pa.Table, Explain]:
        now, feats = answers(snap, codes, model, version)

        def explain(found: Found) -> None:
            _explain_class_changes(found, feats, model)
            _class_change_causes(found, snap, model, previous)
            _mark_disputed(found, ObjectionStore(store.place))

        return now, explain

    return derive(store, snap.day, f"{snap.name}|{version}", version, read)


def derive(
    store: WatchStore,
    day: date,
    derived_for: str,
    version: str,
    read: Callable[[list[str]], tuple[pa.Table, Explain]],
) -> EventReport:
    """The event step over any source of answers: ``read(codes)`` gives each code's
    answer on ``day`` (an answer table, as :func:`answers` makes) and a function adding
    reasons to class events."""
    # Every host runs this step after publishing the day on its own copy: one at a time,
    # so the second reads the answers the first recorded and tells nothing twice.
    with store.exclusive():
        return _derive(store, day, derived_for, version, read)


def _derive(
    store: WatchStore,
    day: date,
    derived_for: str,
    version: str,
    read: Callable[[list[str]], tuple[pa.Table, Explain]],
) -> EventReport:
    if store.derived_for() == derived_for:
        return EventReport(0, 0, {}, skipped=True)
    codes = store.watched(day)
    with ThreadPoolExecutor(1) as pool:  # SQLite's read overlaps the scoring
        last = pool.submit(store.states)
        now, explain = read(codes)
        before = last.result()
    differ = compare(codes, now, before, version)
    found = {code: events_between(old, new) for code, known, new, old in differ if known}
    explain(found)
    rows = fan_out(found, store.watchers(day, found), day.isoformat(), version)
    # changed answers, and the first of households newly watched (recorded, nothing told)
    store.record(rows, {code: new for code, _, new, _ in differ}, derived_for, day)
    by_kind: dict[str, int] = {}
    for row in rows:
        by_kind[row[2]] = by_kind.get(row[2], 0) + 1
    return EventReport(len(codes), len(rows), by_kind)


def fan_out(
    found: Found,
    watchers: list[tuple[str, str]],
    as_of: str,
    version: str,
) -> list[tuple[str, str, str, str, str]]:
    """One row (platform, code, kind, as_of, JSON) per event and platform watching it."""
    platforms: dict[str, list[str]] = {c: [] for c in found}
    for platform, code in watchers:
        if code in platforms:
            platforms[code].append(platform)
    rows = []
    for code in sorted(found):
        for kind, detail in found[code]:
            body = _body(code, kind, as_of, version, detail)
            rows += [(p, code, kind, as_of, body) for p in sorted(platforms[code])]
    return rows


def _explain_class_changes(found: Found, feats: pd.DataFrame, model: ScoringModel) -> None:
    """Add the new class's reasons to each class event (scored with reasons only here)."""
    moved = [c for c, evs in found.items() if any(k in CLASS_KINDS for k, _ in evs)]
    if not moved:
        return
    reasons = model.score_array(encode(feats.loc[moved], model.spec))["reasons"]
    for code, codes in zip(moved, reasons, strict=True):
        for kind, detail in found[code]:
            if kind in CLASS_KINDS:
                detail["reasons"] = reason_details(codes)


def _mark_disputed(found: Found, objections: ObjectionStore) -> None:
    """Mark ``under_objection`` the reasons of class events that a record under an open
    objection stands behind, as a score answer marks them (``serving.objections``)."""
    explained = [c for c, evs in found.items() if any("reasons" in d for _, d in evs)]
    disputed = objections.disputed(explained)
    for code in explained:
        for _, detail in found[code]:
            for reason in detail.get("reasons", []):
                reason["under_objection"] = reason["code"] in disputed.get(code, set())


def _class_change_causes(
    found: Found, snap: Snapshot, model: ScoringModel, previous: date | None
) -> None:
    """Say of each ``class_changed`` event whether a record moved it (``record``: learnt,
    changed, past a deadline) or only the days passing (``window``: its registration's age
    or the time since a marking or penalty entered a new published band, a record left a
    window): the household's records of today, read as on the day its last answer was
    derived (``previous``), give its last class back when only the days moved it."""
    moved = [c for c, evs in found.items() if any(k == "class_changed" for k, _ in evs)]
    if not moved:
        return
    then: dict[str, str] = {}
    if previous is not None and previous != snap.day:
        feats = watched_frame(snap, moved, previous).set_index("uscc")
        operating = feats.index[feats[FEATURE_NAMES[0]].notna()]
        if len(operating):
            scored = model.score_frame(feats.loc[operating], with_reasons=False)
            then = dict(zip(operating, scored["risk_class"], strict=True))
    for code in moved:
        for kind, detail in found[code]:
            if kind == "class_changed":
                detail["cause"] = "window" if then.get(code) == detail["from"] else "record"


def _body(code: str, kind: str, as_of: str, version: str, detail: dict) -> str:
    """An event as the feed gives it (its id is added when read)."""
    return json.dumps(
        {
            "uscc": code,
            "kind": kind,
            "publication": as_of,
            "model_version": version,
            **detail,
        },
        ensure_ascii=False,
        sort_keys=False,
    )


def baseline(store: WatchStore, snap: Snapshot, codes: list[str], model, version: str) -> None:
    """The first answer of newly watched codes, from the publication they were watched on."""
    known = set(store.states(codes).column("uscc").to_pylist())
    missing = [c for c in codes if c not in known]
    if missing:
        now, _ = answers(snap, missing, model, version)
        store.baseline({r.pop("uscc"): Answer(**r) for r in now.to_pylist()})


def derive_current(watch: Path | Postgres, online_path: Path, served: ServedModel) -> EventReport:
    """Events for the online store's current publication and the served model (what
    ``credref refresh`` runs after publishing, and ``credref promote`` after a switch)."""
    with OnlineStore(online_path).current() as snap:
        return derive_events(WatchStore(watch), snap, served.model, served.version)
