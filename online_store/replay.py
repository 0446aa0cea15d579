"""``credref audit replay``: rebuild an audited answer and say whether it is the same.

An audit row names the publication it was answered from and the model version. The
publication ledger (``<online>/ledger.jsonl``, kept when old publication files are
pruned) says what that publication was built from: its as-of date and the last day of
knowledge in the warehouse (``known_through``). The replay recomputes the household's
status and features from the warehouse *as known on that day* (``records.versions``),
so records corrected, repaired or arriving since do not change it, scores them with
that registered model version, and compares every field the audit row holds.

What cannot be replayed, by design: verification verdicts (the claimed values are never
stored), and the items of a batch (audited as a summary).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from features.catalogue import FEATURE_NAMES
from features.pit import feature_sql, status_sql
from online_store.reader import LEDGER, too_old
from records.versions import with_sources

REPLAYABLE = ("/v1/score", "/v1/verify")


class ReplayError(ValueError):
    """The answer cannot be rebuilt (the reason says why)."""


@dataclass
class Replay:
    request_id: str
    endpoint: str
    publication: str
    as_of: str
    known_through: str
    model_version: str | None
    recorded: dict
    replayed: dict
    differences: dict = field(default_factory=dict)  # field -> (recorded, replayed)

    @property
    def equal(self) -> bool:
        return not self.differences


def _audit_row(audit_db: Path, request_id: str) -> dict:
    con = sqlite3.connect(f"file:{audit_db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        row = con.execute("SELECT * FROM audit WHERE request_id = ?", (request_id,)).fetchone()
    finally:
        con.close()
    if row is None:
        raise ReplayError("no audit row with this request id")
    return {**dict(row), "outcome": json.loads(row["outcome"])}


def ledger(online: Path) -> dict[str, dict]:
    """Every publication recorded in the online store's ledger, by name."""
    path = online / LEDGER
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    return {e["publication"]: e for e in (json.loads(line) for line in lines if line)}


def recompute(
    con: duckdb.DuckDBPyConnection, as_of: date, known_through: date, usccs: list[str]
) -> pd.DataFrame:
    """Status and features of ``usccs`` as the publication saw them, indexed by USCC."""
    st = con.sql(with_sources({}, status_sql(as_of), known_through)).df()
    feats = con.sql(feature_sql(as_of, known_at=known_through)).df()
    out = st[st.uscc.isin(usccs)][["uscc", "status_on"]].merge(feats, on="uscc", how="left")
    return out.set_index("uscc")


def replay(
    request_id: str,
    audit_db: Path,
    online: Path,
    warehouse: Path,
    load_model,
    objected: Callable[[str, str, str], str] | None = None,
) -> Replay:
    """Rebuild one audited answer. ``load_model(version)`` gives a registered model's
    scoring model (``scoring.model.ScoringModel``), e.g. unwrapped from the MLflow
    registry (``training.registry.load_version``); ``objected(uscc, at, reasons)`` which
    of these reasons were under objection at that moment (``serving.objections``), spelt
    as the answer's markers are, for an answer that recorded them."""
    row = _audit_row(audit_db, request_id)
    outcome = row["outcome"]
    if row["endpoint"] not in REPLAYABLE or "publication" not in outcome:
        raise ReplayError(
            f"{row['endpoint']} answers are not replayable (answered from a publication: "
            f"{', '.join(REPLAYABLE)}; verdicts and batch items are not stored)"
        )
    pub = ledger(online).get(outcome["publication"])
    if pub is None:
        raise ReplayError("the publication is not in the online store's ledger")
    as_of, known = date.fromisoformat(pub["as_of"]), date.fromisoformat(pub["known_through"])
    if outcome.get("error") == "snapshot_stale":  # the refusal rested on dates alone
        recorded, replayed = _recorded(outcome), _stale_then(outcome, as_of)
    else:
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            found = recompute(con, as_of, known, [row["subject"]])
        finally:
            con.close()
        recorded, replayed = _compare_fields(row, outcome, found, load_model)
        if "objected" in outcome and "score" in outcome:  # the markers, as of the answer
            recorded["objected"] = outcome["objected"]
            if objected is None:
                raise ReplayError("the answer carried objection markers: give their store")
            replayed["objected"] = objected(row["subject"], row["at"], replayed.get("reasons", ""))
    result = Replay(
        request_id,
        row["endpoint"],
        outcome["publication"],
        pub["as_of"],
        pub["known_through"],
        row["model_version"],
        recorded,
        replayed,
    )
    result.differences = {
        k: (recorded[k], replayed.get(k)) for k in recorded if recorded[k] != replayed.get(k)
    }
    return result


def _recorded(outcome: dict) -> dict:
    """What the platform was told, as the audit row holds it. A ``not_found`` refusal
    told it that no household is registered under the code, a ``snapshot_stale`` one that
    the publication was too old for that day: both are compared too; any other refusal
    (a limit, the gate) was no answer from the publication."""
    if "error" in outcome:
        if outcome["error"] == "snapshot_stale":
            return {"refused": "snapshot_stale"}
        if outcome["error"] != "not_found":
            raise ReplayError(
                f"a refusal ({outcome['error']}) is not an answer from a publication: "
                "nothing to rebuild"
            )
        return {"found": False}
    keys = [k for k in ("found", "status", "class", "score", "reasons") if k in outcome]
    recorded = {k: outcome[k] for k in keys}
    if not recorded:
        raise ReplayError("the audit row holds no answer to compare")
    return recorded


def _stale_then(outcome: dict, as_of: date) -> dict:
    """The staleness rule applied again to the publication's day (from the ledger) and
    the day and limit the refusal recorded: refused again, or ``None`` (it should have
    been answered)."""
    if "today" not in outcome:
        raise ReplayError("the refusal does not record its day (audited before it did)")
    age = (date.fromisoformat(outcome["today"]) - as_of).days
    return {"refused": "snapshot_stale" if too_old(age, outcome.get("max_age_days")) else None}


def _compare_fields(row: dict, outcome: dict, found: pd.DataFrame, load_model):
    """The fields the audit row holds, and the same fields rebuilt."""
    recorded = _recorded(outcome)
    uscc = row["subject"]
    if uscc not in found.index:
        return recorded, {"found": False}
    status = str(found.at[uscc, "status_on"])
    replayed: dict = {"found": True, "status": status}
    if row["endpoint"] == "/v1/score" and status == "operating":
        model = load_model(row["model_version"])
        scored = model.score_frame(found.loc[[uscc], list(FEATURE_NAMES)])
        replayed |= {
            "class": str(scored["risk_class"].iloc[0]),
            "score": int(scored["score"].iloc[0]),
            "reasons": str(scored["reasons"].iloc[0]),
        }
    elif row["endpoint"] == "/v1/score":
        replayed["class"] = None
    return recorded, replayed
