"""What every endpoint shares: the gate's exchange of a request, JSON replies and errors
(each error with its stable code, and the code noted for the audit row)."""

from __future__ import annotations

from typing import Any, TypeVar

import bentoml
from pydantic import BaseModel
from starlette.responses import JSONResponse

from serving.gateway import STATE_KEY, Exchange

Request = TypeVar("Request", bound=BaseModel)

#: Seconds a client should wait after a 503 that names no time of its own (a store
#: briefly unavailable); a stale publication says more (serving.service).
RETRY_503_S = 5


def exchange(ctx: bentoml.Context) -> Exchange:
    ex = ctx.request.scope.get("state", {}).get(STATE_KEY)
    if not isinstance(ex, Exchange):  # only reachable if the gate were bypassed
        raise RuntimeError("request did not pass the gateway")
    return ex


def request_of(ex: Exchange, model: type[Request]) -> Request:
    """The request the gate read and validated: the one parse of a body
    (:mod:`serving.body`); BentoML is handed an empty object."""
    if not isinstance(ex.body, model):  # only reachable if the gate were bypassed
        raise RuntimeError("request did not pass the gateway")
    return ex.body


def error(
    ctx: bentoml.Context,
    ex: Exchange,
    status: int,
    code: str,
    message: str,
    details: list | None = None,
    retry_after_s: int | None = None,
) -> Any:
    ex.outcome = {"error": code}
    if status == 503 and retry_after_s is None:  # every 503 says when to come back
        retry_after_s = RETRY_503_S
    ctx.response.status_code = status  # BentoML applies the context's status to the reply
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
    return JSONResponse({"request_id": ex.request_id, "error": body}, status, headers=headers)


def reply(model: Any) -> Any:
    # Typed Any: the endpoints' annotations name the body for the OpenAPI document, while
    # the reply is a ready JSONResponse (fields left out rather than null).
    return JSONResponse(model.model_dump(mode="json", exclude_none=True, by_alias=True))
