"""The gate in front of every API route: keys, scopes, limits, validation, audit.

An ASGI middleware, so that every request -- refused or answered, valid JSON or not --
passes one place that authenticates it, validates it, and writes its audit row *before*
the answer leaves. If the audit row cannot be written the answer is replaced by a 503
(fail closed). The endpoints only compute answers; they report what they answered
(verdicts, class) in :class:`Exchange`, which the gate audits.

Order of checks, each with its JSON error (``{"request_id", "error": {"code",
"message"}}``): key present (401 ``missing_key``) and valid (401 ``invalid_key``);
failed authentications per client address limited (429 ``too_many_failures``); key may
use the route (403 ``scope_not_granted``); per-key rate (429 ``rate_limited``); POST only
(405); body size (413 ``body_too_large``); JSON object (400 ``invalid_json``); fields
(400 ``invalid_request``, with each field's problem, never its value).

Health (``/livez``, ``/readyz``) and ``/metrics`` answer without a key; everything else,
the OpenAPI document included, needs one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from features.codes import compact
from serving.audit import AuditLog, AuditRecord, AuditUnavailable, GroupWriter
from serving.keys import ApiKey, KeyStore
from serving.schemas import BatchRequest, ScoreRequest, VerifyRequest

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
STATE_KEY = "credref"


@dataclass(frozen=True)
class Route:
    scopes: tuple[str, ...]
    body: type[BaseModel]


ROUTES = {
    "/v1/verify": Route(("verify",), VerifyRequest),
    "/v1/score": Route(("score",), ScoreRequest),
    "/v1/score_batch": Route(("score", "batch"), BatchRequest),
}


@dataclass
class Exchange:
    """One request's facts, shared by the gate and the endpoint (``scope['state']``)."""

    request_id: str
    endpoint: str
    key: ApiKey | None = None
    body: BaseModel | None = None
    purpose: str | None = None
    subject: str | None = None
    outcome: dict = field(default_factory=dict)
    model_version: str | None = None


class TokenBucket:
    """Requests per second with a burst of one second's worth, per name (thread-safe)."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, name: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            ok = tokens >= 1.0
            self._state[name] = (tokens - 1.0 if ok else tokens, now)
            return ok


class Served(Exception):
    """The gate answers itself (the OpenAPI document), after authentication."""

    def __init__(self, body: dict):
        super().__init__("served by the gate")
        self.body = body


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, details: list | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _subject(body: Any) -> str | None:
    """The code(s) asked about, for the audit; anything not shaped like a code is dropped."""

    def one(v: Any) -> str | None:
        if not isinstance(v, str) or len(v) > 40:
            return None
        c = compact(v)
        return c if len(c) == 18 and c.isalnum() and c.isascii() else None

    if not isinstance(body, dict):
        return None
    if isinstance(body.get("usccs"), list):
        return ";".join(one(v) or "?" for v in body["usccs"][:1000])
    return one(body.get("uscc"))


def _field_problems(e: ValidationError) -> list[dict]:
    return [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "(body)",
            "problem": err["msg"].removeprefix("Value error, "),
        }
        for err in e.errors(include_url=False, include_input=False, include_context=False)
    ]


class Gateway:
    """ASGI middleware; add with ``Service.add_asgi_middleware(Gateway, ...)``."""

    def __init__(
        self,
        app: Callable,
        keys: KeyStore,
        audit: AuditLog,
        rate_limit: float,
        auth_failure_limit: float,
        max_body_bytes: int,
        openapi: Callable[[], dict] | None = None,
    ):
        self.app = app
        self.keys = keys
        self.audit = audit
        self.writer = GroupWriter(audit)
        self.max_body = max_body_bytes
        self.openapi = openapi  # the document to serve at /docs.json (else BentoML's)
        self.rate = TokenBucket(rate_limit)
        self.failures = TokenBucket(auth_failure_limit, burst=max(10.0, auth_failure_limit))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ex = Exchange(uuid.uuid4().hex, scope["path"])
        scope.setdefault("state", {})[STATE_KEY] = ex
        try:
            forward = await self._admit(scope, receive, ex)
            status, headers, body = await self._forward(scope, forward)
        except Refusal as r:
            status, headers, body = self._error(ex, r)
        except Served as served:
            status, headers = 200, [(b"content-type", b"application/json")]
            body = json.dumps(served.body, ensure_ascii=False).encode()
        except Exception as e:  # a bug must still give a JSON 500 and an audit row
            # The type only: an exception's text could quote a request's content.
            logger.error("request %s failed: %s", ex.request_id, type(e).__name__)
            status, headers, body = self._error(
                ex, Refusal(500, "internal_error", "the service failed; the request id is logged")
            )
        await self._audit_and_send(send, ex, status, headers, body, started)

    # --- checks ---------------------------------------------------------------------

    def _key(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                v = value.decode("latin-1")
                return v[7:].strip() if v[:7].lower() == "bearer " else v.strip()
            if name == b"x-api-key":
                return value.decode("latin-1").strip()
        return None

    async def _admit(self, scope: Scope, receive: Receive, ex: Exchange) -> Receive:
        secret = self._key(scope)
        client = (scope.get("client") or ("?", 0))[0]
        if not secret:
            self._count_failure(client)
            raise Refusal(401, "missing_key", "an API key is required (Authorization: Bearer)")
        key = self.keys.authenticate(secret)  # an indexed read on a kept connection: microseconds
        if key is None:
            self._count_failure(client)
            raise Refusal(401, "invalid_key", "the API key is unknown or revoked")
        ex.key = key
        route = ROUTES.get(scope["path"])
        if route is None:  # docs, index, unknown paths: any valid key, no body rules
            if scope["path"] == "/docs.json" and self.openapi is not None:
                raise Served(self.openapi())
            return receive
        missing = [s for s in route.scopes if s not in key.scopes]
        if missing:
            raise Refusal(403, "scope_not_granted", f"this key lacks the scope(s) {missing}")
        if not self.rate.allow(key.key_id):
            raise Refusal(429, "rate_limited", "request rate above this key's limit")
        if scope["method"] != "POST":
            raise Refusal(405, "method_not_allowed", "use POST")
        raw = await self._read_body(scope, receive)
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise Refusal(400, "invalid_json", "the body is not valid JSON (UTF-8)") from None
        if not isinstance(parsed, dict):
            raise Refusal(400, "invalid_json", "the body must be a JSON object")
        ex.subject = _subject(parsed)
        purpose = parsed.get("purpose")
        ex.purpose = purpose if isinstance(purpose, str) and len(purpose) <= 40 else None
        try:
            ex.body = route.body.model_validate(parsed)
        except ValidationError as e:
            problems = _field_problems(e)
            raise Refusal(
                400,
                "invalid_request",
                "; ".join(f"{p['field']}: {p['problem']}" for p in problems),
                problems,
            ) from None
        ex.purpose = str(getattr(ex.body, "purpose", ex.purpose))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return replay

    def _count_failure(self, client: str) -> None:
        if not self.failures.allow(client):
            raise Refusal(429, "too_many_failures", "too many failed authentications; slow down")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                raise Refusal(413, "body_too_large", f"the body exceeds {self.max_body} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refusal(400, "invalid_json", "the client disconnected mid-body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise Refusal(413, "body_too_large", f"the body exceeds {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # --- forwarding, errors, audit --------------------------------------------------

    async def _forward(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        status, headers, chunks = 500, [], []

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        return status, headers, b"".join(chunks)

    def _error(self, ex: Exchange, r: Refusal) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        err: dict[str, Any] = {"code": r.code, "message": r.message}
        if r.details:
            err["details"] = r.details
        ex.outcome = {"error": r.code}
        body = json.dumps({"request_id": ex.request_id, "error": err}, ensure_ascii=False)
        headers = [(b"content-type", b"application/json")]
        if r.status == 429:
            headers.append((b"retry-after", b"1"))
        return r.status, headers, body.encode()

    async def _audit_and_send(
        self,
        send: Send,
        ex: Exchange,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        started: float,
    ) -> None:
        if status >= 500 and "error" not in ex.outcome:
            ex.outcome = {"error": "internal_error"}
            body = json.dumps(
                {
                    "request_id": ex.request_id,
                    "error": {"code": "internal_error", "message": "the service failed"},
                }
            ).encode()
            headers = [(b"content-type", b"application/json")]
        record = AuditRecord(
            request_id=ex.request_id,
            endpoint=ex.endpoint,
            outcome={"http": status, **ex.outcome},
            platform=ex.key.platform if ex.key else None,
            purpose=ex.purpose,
            subject=ex.subject,
            model_version=ex.model_version,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        try:
            await self.writer.submit(record)
        except AuditUnavailable:
            logger.error("audit store unavailable: request %s refused (503)", ex.request_id)
            status, headers, body = self._error(
                ex, Refusal(503, "audit_unavailable", "the audit log cannot be written; retry")
            )
        headers = [
            (k, v) for k, v in headers if k.lower() not in (b"content-length", b"x-request-id")
        ]
        headers += [
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", ex.request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
