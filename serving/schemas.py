"""Request and response bodies of the platform API (pydantic; they make the OpenAPI doc).

Requests forbid unknown fields and carry no more than the question needs. Responses
carry verdicts, statuses, scores, classes and reason codes: never a stored value.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from online_store.verification import Verdict
from records.codes import compact, uscc_problem
from records.schema import STATUSES

MAX_BATCH = 1000
MAX_FIELD_CHARS = 200  # longer than any registered name or address


class Purpose(StrEnum):
    """Why the platform asks (pilot rules: opening merchant codes, credit-risk reference)."""

    ONBOARDING = "onboarding"  # opening a merchant collection code
    PERIODIC_REVIEW = "periodic_review"  # re-checking an existing merchant
    RISK_REFERENCE = "risk_reference"  # a credit-risk decision on an existing merchant


@lru_cache(maxsize=1 << 16)
def valid_uscc(value: str) -> str:
    # Cached: the gate and BentoML both validate a request body, and platforms ask about
    # the same households again; only valid codes are kept (a refusal raises).
    problem = uscc_problem(value, household=True)
    if problem is not None:
        raise ValueError(problem.removeprefix("uscc: "))
    return compact(value)


#: A household's unified social credit code; spaces and hyphens are ignored.
Uscc = Annotated[
    str,
    Field(
        min_length=1,
        max_length=40,
        description="Unified social credit code (18 characters, GB 32100-2015) of an "
        "individual business (starts with 92).",
        examples=["92440300MA5DKQ0E24"],
    ),
    AfterValidator(valid_uscc),
]
Claim = Annotated[str, Field(min_length=1, max_length=MAX_FIELD_CHARS)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


#: A household code that passes its check (the examples' subject: no household of a real
#: register), and the example requests the document shows; a test sends each of them.
EXAMPLE_USCC = "92440300MA5DKQ0E24"


def _example(**body: Any) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [body]})


class VerifyRequest(_Request):
    model_config = _example(
        uscc=EXAMPLE_USCC, purpose="onboarding", operator_name="王伟", name="王伟便利店"
    )

    uscc: Uscc
    purpose: Purpose = Field(Purpose.ONBOARDING, description="Declared purpose of the check.")
    name: Claim | None = Field(None, description="Registered name the merchant claimed.")
    operator_name: Claim | None = Field(None, description="Operator name claimed.")
    operator_id_number: Claim | None = Field(
        None, description="Operator's resident ID number claimed; compared by keyed hash."
    )
    address: Claim | None = Field(None, description="Business premises claimed.")


class ScoreRequest(_Request):
    model_config = _example(uscc=EXAMPLE_USCC, purpose="onboarding")

    uscc: Uscc
    purpose: Purpose


class BatchRequest(_Request):
    model_config = _example(usccs=[EXAMPLE_USCC], purpose="periodic_review")

    usccs: list[str] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"Up to {MAX_BATCH} codes; each is answered (or refused) on its own.",
    )
    purpose: Purpose


class WatchRequest(_Request):
    model_config = _example(usccs=[EXAMPLE_USCC], purpose="merchant_monitoring")

    usccs: list[str] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"Up to {MAX_BATCH} codes to watch (or renew), each verified by this "
        "platform with a match in the last 30 days.",
    )
    purpose: Literal["merchant_monitoring"]


class UnwatchRequest(_Request):
    model_config = _example(usccs=[EXAMPLE_USCC])

    usccs: list[str] = Field(
        min_length=1, max_length=MAX_BATCH, description=f"Up to {MAX_BATCH} codes to stop watching."
    )


class WatchListQuery(_Request):
    """Query parameters of ``GET /v1/watch``."""

    after: str = Field("", max_length=40, description="The `next` a previous page returned.")
    limit: int = Field(MAX_BATCH, ge=1, le=MAX_BATCH)


class ChangesQuery(_Request):
    """Query parameters of ``GET /v1/changes``."""

    after: str = Field(
        "", max_length=64, description="The cursor a previous call returned (none: the start)."
    )
    limit: int = Field(100, ge=1, le=MAX_BATCH)


Status = StrEnum("Status", {s.upper(): s for s in STATUSES})  # type: ignore[misc]


class FieldVerdicts(BaseModel):
    name: Verdict
    operator_name: Verdict
    operator_id_number: Verdict
    address: Verdict


class VerifyResponse(BaseModel):
    request_id: str
    uscc: str
    found: bool
    status: Status | None = Field(None, description="Registration status on the as-of date.")
    as_of: str
    fields: FieldVerdicts | None = Field(None, description="Per claimed field; None if not found.")


class Guidance(BaseModel):
    """What the rules let the household do about this reason (versioned with the
    catalogue)."""

    remedy: Literal["act", "repair", "time", "never", "none"] = Field(
        description="act: doing something ends it (file, correct, register); repair: "
        "credit repair after a minimum period, obligations met; time: it ends by itself; "
        "never: not repairable; none: nothing adverse."
    )
    text_zh: str
    text_en: str
    source: str = Field(description="The rule it follows (Chinese title).")


class Reason(BaseModel):
    code: str
    text_zh: str
    text_en: str
    guidance: Guidance
    under_objection: bool = Field(
        False,
        description="The household objects to a record behind this reason and the regulator "
        "has not yet resolved it (异议): treat the reason as disputed, not as settled.",
    )


class ScoreResult(BaseModel):
    uscc: str | None = Field(
        None, description="The code, compact; absent on an item refused as not a valid code."
    )
    index: int | None = Field(None, description="Batch items only: the item's position (from 0).")
    status: Status | None = None
    as_of: str | None = None
    score: int | None = Field(
        None,
        description="0-1000, higher = lower risk: the household's standing on its records "
        "(moves with its records, not with the season; odds per score: GET /v1/score_guide).",
    )
    risk_class: Literal["A", "B", "C", "D"] | None = Field(
        None,
        description="A (low risk) to D (high risk): a fixed band of the standing's long-run "
        "PD, the same meaning on every day (bands and observed bad rates: GET /v1/score_guide).",
    )
    reasons: list[Reason] | None = Field(
        None,
        description="At most four, strongest first; each true of the household's records on the day.",
    )
    pd: float | None = Field(
        None,
        description="Point-in-time PD: the probability of an adverse record in the 12 months "
        "from the day (follows the reporting calendar); only with scope score:pd.",
    )
    note: str | None = Field(None, description="Why there is no score, if there is none.")
    review_url: str | None = Field(
        None,
        description="A score is a reference, not a decision: a platform that declines a "
        "merchant because of it gives the household this address, where it gets its report "
        "and asks for a human review. It carries the request's reference, no household data.",
    )
    error: ErrorBody | None = Field(None, description="Batch items only: why refused.")


class ScoreResponse(ScoreResult):
    uscc: str
    request_id: str
    model_version: str


class BatchResponse(BaseModel):
    request_id: str
    model_version: str
    as_of: str
    results: list[ScoreResult]


class WatchResult(BaseModel):
    uscc: str | None = Field(
        None, description="The code, compact; absent on an item refused as not a valid code."
    )
    index: int = Field(description="The item's position in the request (from 0).")
    watched: bool
    expires_on: str | None = Field(None, description="The watch ends on this day unless renewed.")
    error: ErrorBody | None = Field(None, description="Why this code is not watched.")


class WatchResponse(BaseModel):
    request_id: str
    results: list[WatchResult]


class WatchedCode(BaseModel):
    uscc: str
    expires_on: str


class WatchListResponse(BaseModel):
    request_id: str
    count: int = Field(description="Households this platform watches now.")
    usccs: list[WatchedCode]
    # the change feed's paging: `next` to pass as `after`, `more` when more follow now
    next: str = Field(description="Pass as `after` for the next page.")
    more: bool = Field(description="Whether more watches follow this page.")


EventKind = Literal[
    "status_changed",
    "abnormal_marked",
    "abnormal_restored",
    "serious_listed",
    "serious_removed",
    "penalty_in_publicity",
    "class_changed",
    "model_changed",
    "objection_opened",
    "objection_resolved",
]


class Event(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(description="Unique and stable: a repeated event has the same id.")
    uscc: str
    kind: EventKind
    publication: str = Field(description="The publication (as-of day) it was found in.")
    model_version: str
    from_: str | None = Field(None, alias="from", description="Class or status before.")
    to: str | None = Field(None, description="Class or status after.")
    reasons: list[Reason] | None = Field(None, description="Class events: the new reasons.")
    reason: Reason | None = Field(None, description="Marking, listing and penalty events.")
    objection: str | None = Field(
        None,
        description="objection_opened / objection_resolved: the objection's reference. "
        "`reasons` are those the disputed record stands behind (marked `under_objection` "
        "in answers while it is open); never the record or the household's statement.",
    )
    outcome: Literal["upheld", "rejected"] | None = Field(
        None,
        description="objection_resolved: `upheld` (the record is corrected and the answer "
        "recomputed: a later event tells what changed) or `rejected` (the record stands).",
    )
    cause: Literal["record", "window"] | None = Field(
        None,
        description="class_changed: `record` (a record of the household was learnt or "
        "changed, a deadline passed) or `window` (only the days passing: its registration's "
        "age or the time since a marking or penalty entered a new published band, a record "
        "left its window). Never the season: the class reads no calendar position.",
    )


class GuideQuery(_Request):
    """``GET /v1/score_guide`` takes no parameters."""


class GuideClass(BaseModel):
    risk_class: Literal["A", "B", "C", "D"] = Field(alias="class")
    long_run_pd_from: float
    long_run_pd_to: float
    score_from: int
    score_to: int
    households: int = Field(description="Test-year household-days in the class.")
    share: float
    observed_rate: float | None = Field(
        None, description="Share with the outcome within 12 months (absent: no household)."
    )
    interval_95: list[float] | None = Field(
        None, description="Wilson 95% interval of observed_rate."
    )


class OddsRow(BaseModel):
    score: int
    odds_good_to_bad: float
    long_run_pd: float


class ScoreGuideResponse(BaseModel):
    """What the served model version's score, class and PD mean."""

    request_id: str
    model_version: str
    outcome: str
    horizon_months: int | None = None  # None: the label has no horizon (another catalogue)
    rating_philosophy: str
    override: str
    observed_over: str = Field(description="The out-of-time test year the rates come from.")
    classes: list[GuideClass]
    score_to_odds: list[OddsRow]
    scale: dict


class ChangesResponse(BaseModel):
    request_id: str
    events: list[Event]
    next: str = Field(description="The cursor to pass as `after` next time.")
    more: bool = Field(description="Whether more events follow at once.")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict] | None = None


class ErrorResponse(BaseModel):
    request_id: str
    error: ErrorBody


ScoreResult.model_rebuild()
WatchResult.model_rebuild()
ScoreResponse.model_rebuild()
BatchResponse.model_rebuild()
