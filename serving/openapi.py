"""The OpenAPI document as the platforms see it: BentoML's, with credref's errors.

BentoML documents its own error bodies (``{"error": "..."}``) for 400/404/500; every
credref error has the stable shape :class:`serving.schemas.ErrorResponse`, and the gate
adds 401, 403, 404, 405, 408, 413, 415, 429 and 503. This module rewrites the document accordingly and
declares the bearer-key security scheme; the gate serves it at ``/docs.json``.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import metadata
from typing import Any

from serving.gateway import ROUTES
from serving.schemas import ErrorResponse

#: Every stable error code, its HTTP status and what it means (never the request's values).
CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "the body is not one UTF-8 JSON object"),
    "body_too_deep": (400, "the body nests deeper than allowed"),
    "unknown_field": (400, "fields not in this route's request (counted, never named)"),
    "invalid_string": (400, "a string that is not Unicode text (e.g. a lone surrogate)"),
    "invalid_request": (400, "each wrong field named with its problem, never its value"),
    "missing_key": (401, "no API key (Authorization: Bearer crk_...)"),
    "invalid_key": (401, "the key is unknown or revoked"),
    "scope_not_granted": (403, "the key may not use this route"),
    "method_not_allowed": (405, "the route takes other methods (see Allow)"),
    "body_timeout": (408, "the body did not arrive in time"),
    "body_too_large": (413, "the body exceeds 256 KiB"),
    "unsupported_media_type": (415, "send Content-Type: application/json, no content coding"),
    "headers_too_large": (431, "the headers exceed 16 KiB"),
    "rate_limited": (429, "requests above this key's rate (see Retry-After)"),
    "too_many_failures": (429, "too many failed authentications from this client"),
    "audit_unavailable": (503, "the audit log cannot record the request: not answered"),
    "keys_unavailable": (503, "the key store cannot be read: not answered"),
    "answer_timeout": (503, "no answer in time: not answered"),
    "no_relation": (
        403,
        "this platform neither verified the household's operator with a match in the last "
        "30 days nor watches it (said the same for a registered and an unregistered code)",
    ),
    "not_found": (404, "no household under this code on the as-of date"),
    "verify_guess_limit": (429, "this household's mismatching claims from this platform"),
    "platform_guess_limit": (429, "the platform's mismatching claims today"),
    "key_guess_limit": (429, "this key's share of the platform's mismatching claims today"),
    "household_budget_exhausted": (429, "this key's distinct households today"),
    "platform_budget_exhausted": (429, "the platform's distinct households today"),
    "snapshot_stale": (503, "the publication is older than allowed: the refresh is late"),
    "limits_unavailable": (503, "the limits store cannot be read: not answered"),
    "watch_unavailable": (503, "the watch store cannot be read: not answered"),
    "guide_unavailable": (503, "the served model carries no score guide"),
    "invalid_cursor": (400, "not a cursor issued to this platform"),
    "cursor_expired": (410, "events after the cursor were deleted (90 days are kept)"),
}
#: Codes the gate can give on every route with a key.
GATE = (
    "invalid_json", "body_too_deep", "unknown_field", "invalid_string", "invalid_request",
    "missing_key", "invalid_key", "scope_not_granted", "method_not_allowed", "body_timeout",
    "body_too_large", "unsupported_media_type", "headers_too_large", "rate_limited",
    "too_many_failures", "audit_unavailable", "keys_unavailable", "answer_timeout",
)  # fmt: skip
#: What each operation adds (its endpoint's own refusals).
ROUTE_CODES: dict[tuple[str, str], tuple[str, ...]] = {
    ("post", "/v1/verify"): (
        "verify_guess_limit", "platform_guess_limit", "key_guess_limit",
        "household_budget_exhausted", "platform_budget_exhausted", "snapshot_stale",
        "limits_unavailable",
    ),
    ("post", "/v1/score"): (
        "no_relation", "not_found", "household_budget_exhausted", "platform_budget_exhausted",
        "snapshot_stale", "limits_unavailable",
    ),
    ("post", "/v1/score_batch"): ("snapshot_stale", "limits_unavailable"),
    ("post", "/v1/watch"): ("watch_unavailable", "limits_unavailable"),
    ("delete", "/v1/watch"): ("watch_unavailable",),
    ("get", "/v1/watch"): ("watch_unavailable",),
    ("get", "/v1/changes"): ("invalid_cursor", "cursor_expired", "watch_unavailable"),
    ("get", "/v1/score_guide"): ("guide_unavailable",),
}  # fmt: skip
_REF = "#/components/schemas/{model}"


#: What the document says it is (BentoML's template would name BentoML, its team and a
#: version "None").
INFO = {
    "title": "credref reference service",
    "description": (
        "Verification answers, reference scores, risk classes A-D and reason codes on "
        "individual businesses (个体工商户) from market-regulator records, for payment "
        "platforms. The records never leave the regulator's domain: a platform learns about "
        "the households it verified or watches, and nothing else. A score is a reference, "
        "not a decision: a platform that declines a merchant because of it points the "
        "household to the answer's review_url (its report and a human review). Every call needs a platform key (Authorization: Bearer crk_...) "
        "and is audited. Guide: docs/platforms.md."
    ),
    "contact": {"name": "the credref operators of the market regulator"},
}
TAGS = [
    {"name": "Service APIs", "description": "What platforms call, with a key."},
    {"name": "Infrastructure", "description": "Probes for the load balancer, without a key."},
]


def _version() -> str:
    try:
        return metadata.version("credref")
    except metadata.PackageNotFoundError:  # run from a source tree never installed
        return "0+unknown"


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI dict -> credref's (a new dict)."""
    doc = copy.deepcopy(spec)
    doc["info"] = {**INFO, "version": _version()}
    doc["tags"] = TAGS
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template=_REF)
    for name, sub in error_schema.pop("$defs", {}).items():
        schemas[name] = sub
    schemas["ErrorResponse"] = error_schema
    _request_bodies(doc)
    _public_methods(doc)
    doc["components"]["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "crk_... platform key"}
    }
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if not path.startswith("/v1/"):
                continue
            op["security"] = [{"apiKey": []}]
            ok = op["responses"].get("200", op["responses"].get(200))
            op["responses"] = {"200": ok, **_errors(GATE + ROUTE_CODES.get((method, path), ()))}
            op["description"] = _plain(op.get("description", ""))
            op["tags"] = ["Service APIs"]
    return _tidy_schemas(doc)


def _plain(docstring: str) -> str:
    """An endpoint's docstring as a platform reads it: one paragraph, Markdown code
    (``x`` in the docstring, `x` here), no module names."""
    text = " ".join(docstring.split())
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    module = r"(?:serving|online_store|scoring)\.[\w.]+"
    text = re.sub(rf"\s*\({module}\)", "", text)  # a parenthesis that only names a module
    return re.sub(rf"\({module}:\s*", "(", text)  # ... or begins with one


def _tidy_schemas(doc: dict[str, Any]) -> dict[str, Any]:
    """Schema names as platforms read them (``ScoreResponse``, not BentoML's
    ``ScoreResponseIODescriptor``), and none that nothing refers to (BentoML's own error
    bodies, which credref never sends)."""
    text = json.dumps(doc, ensure_ascii=False)
    text = re.sub(r"(\w+)IODescriptor\b", r"\1", text)
    doc = json.loads(text)
    schemas = doc["components"]["schemas"]
    while True:
        unused = [
            name
            for name in schemas
            if json.dumps(doc, ensure_ascii=False).count(f'"{_REF.format(model=name)}"') == 0
        ]
        if not unused:
            return doc
        for name in unused:
            del schemas[name]


def _errors(codes: tuple[str, ...]) -> dict[str, Any]:
    """The error responses of an operation: one per status, listing the codes it can
    give with that status, each with an example body."""
    out: dict[str, Any] = {}
    for code in codes:
        status, meaning = CODES[code]
        response = out.setdefault(
            str(status),
            {
                "description": "",
                "content": {
                    "application/json": {
                        "schema": {"$ref": _REF.format(model="ErrorResponse")},
                        "examples": {},
                    }
                },
            },
        )
        response["description"] += ("; " if response["description"] else "") + f"{code}: {meaning}"
        response["content"]["application/json"]["examples"][code] = {
            "value": {"request_id": "4f86e8d4b96d470b936b5a4719ba1da3",
                      "error": {"code": code, "message": meaning}}
        }  # fmt: skip
    return dict(sorted(out.items()))


def _request_bodies(doc: dict[str, Any]) -> None:
    """Each route's request as the gate validates it (its model in the route table):
    the endpoints take no BentoML input (the gate parses the body once and hands the
    endpoint its model), so BentoML's own input schemas are empty and dropped."""
    schemas = doc["components"]["schemas"]
    for name in [n for n in schemas if n.endswith("__Input")]:
        del schemas[name]
    for route in ROUTES.values():
        op = doc.get("paths", {}).get(route.target, {}).get("post")
        if op is None:
            continue
        model = route.body.model_json_schema(ref_template=_REF)
        for name, sub in model.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[route.body.__name__] = model
        ref = {"$ref": _REF.format(model=route.body.__name__)}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}


def _public_methods(doc: dict[str, Any]) -> None:
    """BentoML documents every endpoint as a POST to its own path; the routes that clients
    call with GET or DELETE (the gate forwards them to internal paths) move to their
    public method and path, a GET's fields becoming query parameters."""
    paths = doc.get("paths", {})
    for (method, path), route in ROUTES.items():
        if route.target == path:
            continue
        op = paths.pop(route.target, {}).get("post")
        if op is None:
            continue
        if route.query:
            op.pop("requestBody", None)
            schema = route.body.model_json_schema()
            op["parameters"] = [
                {"name": name, "in": "query", "required": False, "schema": prop}
                for name, prop in schema["properties"].items()
            ]
        paths.setdefault(path, {})[method.lower()] = op
