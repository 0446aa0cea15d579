"""The one parser: the gate's reading of a request body, and the only one.

A body is accepted only if it is exactly one JSON object, in UTF-8 (no byte-order mark),
sent as ``application/json`` without a content coding, nested at most
:data:`MAX_DEPTH` deep, with no number longer than :data:`MAX_NUMBER_CHARS` characters,
no NaN or Infinity, no field named twice, and only the fields of the route's request
model. Everything else is refused here with a :class:`BodyRefused` carrying an HTTP status
and a stable code, and its message never quotes the body: not a value, not an unknown
field's name.

The endpoint receives the validated request model from the gate
(:func:`serving.replies.request_of`); BentoML is handed an empty object, so a body it
would read differently from the gate (a form content type, UTF-16, a byte-order mark, a
duplicate field) never reaches it, and a body is parsed once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError

MAX_DEPTH = 4  # the deepest valid body is 2 (an object holding a list of strings)
MAX_NUMBER_CHARS = 32  # no request field is a number; this only keeps int() bounded
MAX_QUERY_BYTES = 512  # a GET's query holds a cursor or a code, and a page size

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = bytes.maketrans(b"", b"")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


class BodyRefused(Exception):
    """The body is not one the gate accepts; ``status`` and ``code`` are stable."""

    def __init__(self, status: int, code: str, message: str, details: list | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def check_content_type(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """``application/json`` (optionally ``; charset=utf-8``) and no content coding."""
    content_type = None
    for name, value in headers:
        if name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            raise BodyRefused(415, "unsupported_media_type", "content codings are not accepted")
        if name == b"content-type":
            content_type = value
    if content_type is None:
        raise BodyRefused(415, "unsupported_media_type", "send Content-Type: application/json")
    media, _, params = content_type.decode("latin-1").partition(";")
    charset = params.strip().lower().replace(" ", "")
    if media.strip().lower() != "application/json" or charset not in ("", "charset=utf-8"):
        raise BodyRefused(415, "unsupported_media_type", "send Content-Type: application/json")


def _depth(raw: bytes) -> int:
    """Deepest bracket nesting outside strings (a bound checked before the JSON parser,
    whose recursion a hostile body could otherwise exhaust)."""
    deepest = level = 0
    for b in _STRING.sub(b'""', raw).translate(_BRACKETS, _NOT_BRACKETS):
        level += 1 if b in b"[{" else -1
        deepest = max(deepest, level)
    return deepest


def _number(text: str) -> float | int:
    if len(text) > MAX_NUMBER_CHARS:
        raise BodyRefused(400, "invalid_json", "a number in the body is too long")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _constant(_: str) -> Any:
    raise BodyRefused(400, "invalid_json", "NaN and Infinity are not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise BodyRefused(400, "invalid_json", "a field is named twice")
    return out


def parse_object(raw: bytes) -> dict:
    """The body as a JSON object, or :class:`BodyRefused`."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise BodyRefused(400, "invalid_json", "the body must be UTF-8 without a byte-order mark")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyRefused(400, "invalid_json", "the body is not valid UTF-8") from None
    if _depth(raw) > MAX_DEPTH:
        raise BodyRefused(400, "body_too_deep", f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        parsed = json.loads(
            text,
            parse_int=_number,
            parse_float=_number,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except (json.JSONDecodeError, RecursionError):
        raise BodyRefused(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise BodyRefused(400, "invalid_json", "the body must be a JSON object")
    _check_strings(parsed)
    return parsed


def _encodable(value: Any) -> bool:
    """Whether every string in ``value`` (keys too) is valid Unicode text. JSON's
    ``\\ud800`` escapes decode to lone surrogates, which no UTF-8 encoder can write back:
    left in, they fail later, in a serialiser, as a 500."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    return True


def _check_strings(parsed: dict) -> None:
    if not _encodable(parsed):
        raise BodyRefused(
            400,
            "invalid_string",
            "a string in the body is not valid Unicode text (a lone surrogate)",
        )


def parse_query(raw: bytes) -> dict:
    """A GET's query string as fields (strings), or :class:`BodyRefused`: at most
    :data:`MAX_QUERY_BYTES`, UTF-8 after percent-decoding, no parameter named twice."""
    if len(raw) > MAX_QUERY_BYTES:
        raise BodyRefused(400, "invalid_request", f"the query exceeds {MAX_QUERY_BYTES} bytes")
    try:
        pairs = parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise BodyRefused(400, "invalid_request", "the query string is not valid") from None
    out = dict(pairs)
    if len(out) != len(pairs):
        raise BodyRefused(400, "invalid_request", "a query parameter is named twice")
    return out


def validate(parsed: dict, model: type[BaseModel]) -> BaseModel:
    """The request model, or :class:`BodyRefused` naming each known field's problem.

    Unknown fields are counted, never named: a name is something the client sent."""
    unknown = [k for k in parsed if k not in model.model_fields]
    if unknown:
        raise BodyRefused(
            400,
            "unknown_field",
            f"{len(unknown)} field(s) not in this route's request; see /docs.json",
        )
    try:
        return model.model_validate(parsed)
    except ValidationError as e:
        problems = field_problems(e)
        raise BodyRefused(
            400,
            "invalid_request",
            "; ".join(f"{p['field']}: {p['problem']}" for p in problems),
            problems,
        ) from None


def field_problems(e: ValidationError) -> list[dict]:
    """Each problem by field path and message; pydantic's messages are asked without the
    input, its context or links, and a path keeps only known names and list positions."""
    return [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "(body)",
            "problem": err["msg"].removeprefix("Value error, "),
        }
        for err in e.errors(include_url=False, include_input=False, include_context=False)
    ]
