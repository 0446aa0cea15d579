"""The OpenAPI document as the platforms see it: BentoML's, with credref's errors.

BentoML documents its own error bodies (``{"error": "..."}``) for 400/404/500; every
credref error has the stable shape :class:`serving.schemas.ErrorResponse`, and the gate
adds 401, 403, 405, 413, 429 and 503. This module rewrites the document accordingly and
declares the bearer-key security scheme; the gate serves it at ``/docs.json``.
"""

from __future__ import annotations

import copy
from typing import Any

from serving.schemas import ErrorResponse

ERRORS = {
    "400": "invalid_json or invalid_request: the body is not JSON, or a field is wrong (each named)",
    "401": "missing_key or invalid_key",
    "403": "scope_not_granted: the key may not use this route",
    "404": "not_found: no household under this code on the as-of date",
    "405": "method_not_allowed: use POST",
    "413": "body_too_large",
    "429": "rate_limited or too_many_failures (see Retry-After)",
    "503": "audit_unavailable: the request could not be audited, so it was not answered",
}
_REF = "#/components/schemas/{model}"


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI dict -> credref's (a new dict)."""
    doc = copy.deepcopy(spec)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template=_REF)
    for name, sub in error_schema.pop("$defs", {}).items():
        schemas[name] = sub
    schemas["ErrorResponse"] = error_schema
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
                if code == "404" and path != "/v1/score":
                    continue
                responses[code] = {
                    "description": text,
                    "content": {
                        "application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}
                    },
                }
            op["responses"] = responses
    return doc
