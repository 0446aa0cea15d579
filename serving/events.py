"""Change-feed events: what a watched household's answer did between two publications.

Each event kind is one rule below (:data:`RULES`), comparing the household's last answer
(as events were last derived, kept by :class:`serving.watch.WatchStore`) with its answer
from the current publication and the served model. :func:`derive_events` runs after each
daily refresh and after a promotion (``credref refresh``, ``credref promote``); it is
idempotent per (publication, model version), so a rerun after a kill adds nothing twice.

Events carry codes, classes, statuses and reason codes with their guidance, never a
record: a penalty in publicity is told by its reason code only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from features.catalogue import FEATURE_NAMES
from serving.model_store import ServedModel
from serving.online import OnlineStore, Snapshot
from serving.watch import Answer, WatchStore
from training.scoring import ScoringModel, reason_details

#: Penalty severity from which a new penalty is told as R07 (orders to suspend or close,
#: revoked licences, bans, fines from 100,000 yuan: features.pit._severity) rather than R06.
SEVERE = 3
NOT_REGISTERED = "not_registered"  # a record withdrawn as entered in error

Detail = dict | None
Rule = Callable[[Answer, Answer | None], Detail]


def _status_changed(old: Answer, new: Answer | None) -> Detail:
    to = new.status if new is not None else NOT_REGISTERED
    return {"from": old.status, "to": to} if to != old.status else None


def _class_changed(old: Answer, new: Answer | None) -> Detail:
    if new is None or old.risk_class is None or new.risk_class is None:
        return None  # entering or leaving operation is a status event
    if old.risk_class == new.risk_class or old.model_version != new.model_version:
        return None
    return {"from": old.risk_class, "to": new.risk_class}


def _model_changed(old: Answer, new: Answer | None) -> Detail:
    """A new champion moved the household's class (told only when the class moves)."""
    if new is None or old.risk_class is None or new.risk_class is None:
        return None
    if old.risk_class == new.risk_class or old.model_version == new.model_version:
        return None
    return {"from": old.risk_class, "to": new.risk_class}


def _flag(name: str, to: int, reason: str | None) -> Rule:
    def rule(old: Answer, new: Answer | None) -> Detail:
        before, after = getattr(old, name), None if new is None else getattr(new, name)
        if before is None or after is None or before == after or after != to:
            return None
        return {"reason": reason_details([reason])[0]} if reason else {}

    return rule


def _penalty_in_publicity(old: Answer, new: Answer | None) -> Detail:
    if new is None or old.penalties is None or new.penalties is None:
        return None
    if new.penalties <= old.penalties:
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


def events_between(old: Answer, new: Answer | None) -> list[tuple[str, dict]]:
    """The (kind, detail) events from one answer to the next."""
    out = []
    for kind, rule in RULES:
        detail = rule(old, new)
        if detail is not None:
            out.append((kind, detail))
    return out


# --- answers from a publication ----------------------------------------------------------


def answers(
    snap: Snapshot, codes: list[str], model: ScoringModel, version: str
) -> tuple[dict[str, Answer], pd.DataFrame]:
    """Each found code's answer in this publication, and the operating ones' features
    (to explain a class change)."""
    df = snap.frame(codes).set_index("uscc")
    operating = df[(df["status"] == "operating") & df["penalties_3y"].notna()]
    feats = operating[list(FEATURE_NAMES)]
    classes = (
        model.score_frame(feats, with_reasons=False)["risk_class"]
        if len(feats)
        else pd.Series(dtype=object)
    )
    out: dict[str, Answer] = {}
    for code, status in df["status"].items():
        out[str(code)] = Answer(str(status), None, None, None, None, None, version)
    abnormal = (feats["abnormal_now_report"] > 0) | (feats["abnormal_now_unreachable"] > 0)
    for code, cls, ab, se, pen, sev in zip(
        feats.index,
        classes,
        abnormal,
        feats["serious_listed"],
        feats["penalties_3y"],
        feats["penalty_max_severity"],
        strict=True,
    ):
        out[str(code)] = Answer(
            "operating", str(cls), int(ab), int(se > 0), int(pen), int(sev), version
        )
    return out, feats


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

    def read(codes: list[str]) -> tuple[dict[str, Answer], Explain]:
        now, feats = answers(snap, codes, model, version)
        return now, lambda found: _explain_class_changes(found, feats, model)

    return derive(store, snap.day, f"{snap.name}|{version}", version, read)


Found = dict[str, list[tuple[str, dict]]]
Explain = Callable[[Found], None]


def derive(
    store: WatchStore,
    day: date,
    derived_for: str,
    version: str,
    read: Callable[[list[str]], tuple[dict[str, Answer], Explain]],
) -> EventReport:
    """The event step over any source of answers: ``read(codes)`` gives each code's
    answer on ``day`` and a function adding reasons to class events."""
    if store.derived_for() == derived_for:
        return EventReport(0, 0, {}, skipped=True)
    watchers = store.watchers(day)
    codes = sorted({code for _, code in watchers})
    now, explain = read(codes)
    found = changes(store.states(codes), now, codes)
    explain(found)
    rows = fan_out(found, watchers, day.isoformat(), version)
    for code in codes:  # a watched record withdrawn: told once, then kept as such
        now.setdefault(code, Answer(NOT_REGISTERED, None, None, None, None, None, version))
    store.record(rows, now, set(codes), derived_for, day)
    by_kind: dict[str, int] = {}
    for row in rows:
        by_kind[row[2]] = by_kind.get(row[2], 0) + 1
    return EventReport(len(codes), len(rows), by_kind)


def changes(
    before: dict[str, Answer], now: dict[str, Answer], codes: list[str]
) -> dict[str, list[tuple[str, dict]]]:
    """Each code's events from its last answer to now (a code with no last answer, just
    watched, has none: its first answer is only recorded)."""
    return {c: events_between(before[c], now.get(c)) for c in codes if c in before}


def fan_out(
    found: dict[str, list[tuple[str, dict]]],
    watchers: list[tuple[str, str]],
    as_of: str,
    version: str,
) -> list[tuple[str, str, str, str, str]]:
    """One row (platform, code, kind, as_of, JSON) per event and platform watching it."""
    platforms: dict[str, list[str]] = {}
    for platform, code in watchers:
        platforms.setdefault(code, []).append(platform)
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
    reasons = model.score_frame(feats.loc[moved])["reasons"]
    for code in moved:
        for kind, detail in found[code]:
            if kind in CLASS_KINDS:
                detail["reasons"] = reason_details(str(reasons[code]))


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
    known = store.states(codes)
    missing = [c for c in codes if c not in known]
    if missing:
        now, _ = answers(snap, missing, model, version)
        store.baseline(now)


def derive_current(watch_path: Path, online_path: Path, served: ServedModel) -> EventReport:
    """Events for the online store's current publication and the served model (what
    ``credref refresh`` runs after publishing, and ``credref promote`` after a switch)."""
    with OnlineStore(online_path).current() as snap:
        return derive_events(WatchStore(watch_path), snap, served.model, served.version)
