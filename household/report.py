"""The household's own report: what credref says about it, why, until when, and who asked.

Given to the household itself (PIPL Art. 24: an explanation of an automated assessment;
征信业务管理办法: the subject's query record and objection). It holds the household's own
records only, never another person's data and never a value a platform claimed: the
query record says which platform asked, when, why and which kind of answer it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from features.catalogue import NO_ADVERSE, REASONS_BY_CODE, Reason
from features.pit import status_sql
from household.evidence import Evidence, evidence
from household.outlook import Then, now_standing, outlook
from scoring.model import ScoringModel


@dataclass(frozen=True)
class ClassMeaning:
    """What the score guide says of the household's class (``training.guide``)."""

    risk_class: str
    score_from: int
    score_to: int
    observed_rate: float
    share: float
    outcome: str
    horizon_months: int


@dataclass(frozen=True)
class HouseholdReport:
    uscc: str
    as_of: date
    status: str  # registration status on as_of ("unknown": not registered by then)
    model_version: str
    score: int | None
    risk_class: str | None
    reasons: tuple[str, ...]  # as a platform is served them, best first
    meaning: ClassMeaning | None
    evidence: tuple[Evidence, ...]
    outlook: tuple[Then, ...]
    queries: tuple[dict, ...]  # the query record: at, platform, endpoint, purpose, answer
    review_url: str
    #: its objections (``serving.objections``): record, reasons, statement, dates, outcome
    objections: tuple[dict, ...] = ()

    def reason(self, code: str) -> Reason:
        return REASONS_BY_CODE.get(code, NO_ADVERSE)


def status_on(warehouse: duckdb.DuckDBPyConnection, uscc: str, as_of: date) -> str:
    """The household's registration status on ``as_of`` (``features.pit.status_sql``)."""
    row = warehouse.sql(
        f"SELECT status_on FROM ({status_sql(as_of)}) WHERE uscc = $uscc", params={"uscc": uscc}
    ).fetchall()
    return str(row[0][0]) if row else "unknown"


def meaning(model: ScoringModel, risk_class: str | None) -> ClassMeaning | None:
    """The score guide's line for the class (None without a guide or a class)."""
    if model.guide is None or risk_class is None:
        return None
    line = next((c for c in model.guide["classes"] if c["class"] == risk_class), None)
    if line is None:
        return None
    return ClassMeaning(
        risk_class,
        int(line["score_from"]),
        int(line["score_to"]),
        float(line["observed_rate"]),
        float(line["share"]),
        str(model.guide["outcome"]),
        int(model.guide["horizon_months"]),
    )


def build_report(
    warehouse: duckdb.DuckDBPyConnection,
    uscc: str,
    as_of: date,
    model: ScoringModel,
    model_version: str,
    queries: list[dict],
    review_url: str,
    objections: list[dict] | None = None,
) -> HouseholdReport:
    """The report of one household on ``as_of``, from its records as known now, with its
    query record and its objections as the caller read them from the service's stores."""
    status = status_on(warehouse, uscc, as_of)
    if status != "operating":  # no score: a platform gets the status alone
        return HouseholdReport(
            uscc=uscc,
            as_of=as_of,
            status=status,
            model_version=model_version,
            score=None,
            risk_class=None,
            reasons=(),
            meaning=None,
            evidence=(),
            outlook=(),
            queries=tuple(queries),
            review_url=review_url,
            objections=tuple(objections or ()),
        )
    score, cls, reasons = now_standing(warehouse, uscc, as_of, model)
    found = evidence(warehouse, uscc, as_of)
    return HouseholdReport(
        uscc=uscc,
        as_of=as_of,
        status=status,
        model_version=model_version,
        score=score,
        risk_class=cls,
        reasons=reasons,
        meaning=meaning(model, cls),
        evidence=tuple(found),
        outlook=tuple(outlook(warehouse, uscc, as_of, found, model)),
        queries=tuple(queries),
        review_url=review_url,
        objections=tuple(objections or ()),
    )
