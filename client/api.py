"""The calls a platform makes (docs/platforms.md), each typed, over ``httpx``.

Every answer is the service's JSON as a typed dict; every refusal is a
:class:`CredrefError` carrying the HTTP status, credref's stable code, the message, the
fields at fault and ``Retry-After`` (seconds) where the service gave one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

import httpx

Purpose = Literal["onboarding", "periodic_review", "risk_reference"]
Verdict = Literal["match", "mismatch", "not_provided"]


class Reason(TypedDict):
    code: str
    text_zh: str
    text_en: str
    guidance: NotRequired[dict[str, Any]]
    under_objection: NotRequired[bool]  # the household disputes a record behind it


class VerifyAnswer(TypedDict):
    request_id: str
    uscc: str
    found: bool
    status: NotRequired[str]
    as_of: NotRequired[str]
    fields: NotRequired[dict[str, Verdict]]


class ScoreAnswer(TypedDict):
    request_id: str
    model_version: str
    uscc: str
    status: str
    as_of: str
    score: NotRequired[int]
    risk_class: NotRequired[Literal["A", "B", "C", "D"]]
    reasons: NotRequired[list[Reason]]
    pd: NotRequired[float]
    review_url: NotRequired[str]  # where the household gets its report and a human review


class BatchAnswer(TypedDict):
    request_id: str
    model_version: str
    as_of: str
    results: list[dict[str, Any]]  # each a ScoreAnswer's fields with its index, or an error


class WatchAnswer(TypedDict):
    request_id: str
    results: list[dict[str, Any]]


class ChangesPage(TypedDict):
    request_id: str
    events: list[dict[str, Any]]
    next: NotRequired[str]
    more: bool


@dataclass
class CredrefError(Exception):
    """A refusal, as the service states it (never quoting what was sent)."""

    status: int
    code: str
    message: str = ""
    details: list[dict[str, Any]] = field(default_factory=list)
    retry_after_s: float | None = None
    request_id: str | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class CredrefClient:
    """``CredrefClient(url, key)``; use it as a context manager or call :meth:`close`."""

    def __init__(self, url: str, key: str, timeout_s: float = 10.0, transport: Any = None):
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> CredrefClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the calls ------------------------------------------------------------------------

    def verify(self, uscc: str, purpose: Purpose = "onboarding", **claims: str) -> VerifyAnswer:
        """Is this registration real, and do the claimed fields (name, operator_name,
        operator_id_number, address) match it?"""
        return self._call("POST", "/v1/verify", {"uscc": uscc, "purpose": purpose, **claims})

    def score(self, uscc: str, purpose: Purpose = "onboarding") -> ScoreAnswer:
        return self._call("POST", "/v1/score", {"uscc": uscc, "purpose": purpose})

    def score_batch(self, usccs: list[str], purpose: Purpose = "periodic_review") -> BatchAnswer:
        return self._call("POST", "/v1/score_batch", {"usccs": usccs, "purpose": purpose})

    def watch(self, usccs: list[str]) -> WatchAnswer:
        body = {"usccs": usccs, "purpose": "merchant_monitoring"}
        return self._call("POST", "/v1/watch", body)

    def unwatch(self, usccs: list[str]) -> WatchAnswer:
        return self._call("DELETE", "/v1/watch", {"usccs": usccs})

    def watched(self, after: str = "", limit: int = 1000) -> dict[str, Any]:
        """A page of this platform's watches (``next`` and ``more``, as the change feed)."""
        return self._call("GET", "/v1/watch", None, {"after": after, "limit": limit})

    def changes(self, cursor: str | None = None, limit: int = 1000) -> ChangesPage:
        query: dict[str, Any] = {"limit": limit, **({"after": cursor} if cursor else {})}
        return self._call("GET", "/v1/changes", None, query)

    def all_changes(self, cursor: str | None = None) -> Iterator[dict[str, Any]]:
        """Every event after ``cursor``, page by page."""
        while True:
            page = self.changes(cursor)
            yield from page["events"]
            cursor = page.get("next", cursor)
            if not page["more"]:
                return

    def score_guide(self) -> dict[str, Any]:
        return self._call("GET", "/v1/score_guide", None)

    def ready(self) -> dict[str, Any]:
        """``/readyz``: ready or not, and why (no key needed; never raises on 503)."""
        return self._http.get("/readyz").json()

    # --- one place that speaks HTTP --------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None, query: dict | None = None) -> Any:
        r = self._http.request(method, path, json=body, params=query)
        if r.status_code == 200:
            return r.json()
        raise _error(r)


def _error(r: httpx.Response) -> CredrefError:
    try:
        said = r.json()
    except ValueError:
        said = {}
    err = said.get("error", {}) if isinstance(said, dict) else {}
    retry = r.headers.get("retry-after")
    return CredrefError(
        status=r.status_code,
        code=err.get("code", "http_error"),
        message=err.get("message", ""),
        details=err.get("details", []),
        retry_after_s=float(retry) if retry else None,
        request_id=said.get("request_id") if isinstance(said, dict) else None,
    )
