"""The OpenAPI document as the platforms see it: BentoML's, with credref's errors.

BentoML documents its own error bodies (``{"error": "..."}``) for 400/404/500; every
credref error has the stable shape :class:`serving.schemas.ErrorResponse`, and the gate
adds 401, 403, 404, 405, 408, 413, 415, 429 and 503. This module rewrites the document accordingly and
declares the bearer-key security scheme; the gate serves it at ``/docs.json``.
"""

from __future__ import annotations

import copy
from importlib import metadata
from typing import Any

from serving.gateway import ROUTES
from serving.schemas import ErrorResponse

ERRORS = {
    "400": "invalid_json (not one UTF-8 JSON object), body_too_deep, unknown_field (counted, "
    "never named), invalid_string (a string that is not Unicode text, e.g. a lone "
    "surrogate), invalid_request (each wrong field named, never its value), or "
    "invalid_cursor (/v1/changes: not a cursor issued to this platform)",
    "401": "missing_key or invalid_key",
    "403": "scope_not_granted: the key may not use this route; no_relation (/v1/score): this "
    "platform neither verified the household's operator with a match in the last 30 days "
    "nor watches it (said the same for a registered and an unregistered code)",
    "404": "not_found: no household under this code on the as-of date (/v1/score); unknown_route",
    "405": "method_not_allowed: the route takes other methods",
    "408": "body_timeout: the body did not arrive in time",
    "413": "body_too_large",
    "415": "unsupported_media_type: send Content-Type: application/json, no content coding",
    "431": "headers_too_large",
    "429": "rate_limited or too_many_failures; on /v1/verify also verify_guess_limit, "
    "platform_guess_limit, key_guess_limit; on every household route "
    "household_budget_exhausted (this key's distinct households today) or "
    "platform_budget_exhausted (the platform's) (see Retry-After and serving.limits)",
    "410": "cursor_expired (/v1/changes): events after the cursor were deleted (90 days are "
    "kept); start again without a cursor",
    "503": "audit_unavailable, watch_unavailable, limits_unavailable, answer_timeout, snapshot_stale or guide_unavailable: not "
    "answered; retry",
}
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
        "not a decision. Every call needs a platform key (Authorization: Bearer crk_...) "
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
        for op in ops.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if not path.startswith("/v1/"):
                continue
            op["security"] = [{"apiKey": []}]
            ok = op["responses"].get("200", op["responses"].get(200))
            responses = {"200": ok}
            for code, text in ERRORS.items():
                responses[code] = {
                    "description": text,
                    "content": {
                        "application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}
                    },
                }
            op["responses"] = responses
    return doc


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
