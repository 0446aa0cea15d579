"""The gate in front of every route: keys, scopes, limits, the one parser, audit.

An ASGI middleware, so that every request -- refused or answered, valid JSON or not --
passes one place that authenticates it, reads and validates its body
(:mod:`serving.body`, the only reader of a body), and writes its audit row *before* the
answer leaves. If the audit row cannot be written the answer is replaced by a 503 (fail
closed). The endpoints only compute answers; they report what they answered (verdicts,
class) in :class:`Exchange`, which the gate audits.

Order of checks, each with its JSON error (``{"request_id", "error": {"code",
"message"}}``): key present (401 ``missing_key``) and valid (401 ``invalid_key``); failed
authentications per client address limited (429 ``too_many_failures``); a known route
(404 ``unknown_route``) and method (405 ``method_not_allowed``: :data:`ROUTES`); key may
use the route (403 ``scope_not_granted``); per-key rate (429 ``rate_limited``); for a GET,
its query string (:func:`serving.body.parse_query`), else ``application/json`` (415
``unsupported_media_type``), body size (413 ``body_too_large``) and arrival time (408
``body_timeout``), one UTF-8 JSON object of bounded depth and numbers (400
``invalid_json`` / ``body_too_deep``); known fields only (400 ``unknown_field``); each
field valid (400 ``invalid_request``, naming the field, never its value). The endpoint
then has ``answer_timeout_s`` to answer (else 503 ``answer_timeout``).

BentoML receives an empty object, never the client's bytes: the endpoint reads the
request the gate validated from the exchange (:func:`serving.replies.request_of`).

Only the probes ``/livez`` and ``/readyz`` answer without a key and are not audited: they
name no household and carry no data. A refusal before authentication is audited as a
count per client address and window (:mod:`serving.tally`), so no client can grow the
audit without bound; every other row names the key id and the client address (the
peer, or what a proxy in ``CREDREF_TRUSTED_PROXIES`` says it forwarded for). ``/metrics`` needs a key with the ``metrics`` scope.
A websocket upgrade is refused in JSON (where the server supports the denial extension)
and audited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from serving import apidocs
from serving.audit import AuditLog, AuditRecord, AuditUnavailable, GroupWriter
from serving.body import (
    BodyRefused,
    check_content_type,
    parse_object,
    parse_query,
    validate,
)
from serving.keys import ApiKey, KeyStore
from serving.metrics import exposition, metrics, route_label
from serving.schemas import (
    BatchRequest,
    ChangesQuery,
    GuideQuery,
    Purpose,
    ScoreRequest,
    UnwatchRequest,
    VerifyRequest,
    WatchListQuery,
    WatchRequest,
    valid_uscc,
)
from serving.tally import RefusalTally

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROBES = frozenset({"/livez", "/readyz", "/healthz"})
#: The HTTP server (uvicorn with httptools) does not bound header size itself; the gate
#: refuses more than this in all (431), though a reverse proxy should refuse it sooner.
MAX_HEADER_BYTES = 16 * 1024
STATE_KEY = "credref"
PURPOSES = frozenset({*(p.value for p in Purpose), "merchant_monitoring", "score_guide"})
_JSON = (b"content-type", b"application/json")
#: Refusals made before a key is known: counted, not audited one by one (serving.tally).
BEFORE_KEY = frozenset(
    {
        "missing_key",
        "invalid_key",
        "too_many_failures",
        "headers_too_large",
        "websocket_not_supported",
    }
)


@dataclass(frozen=True)
class Route:
    scopes: tuple[str, ...]
    body: type[BaseModel]
    #: The BentoML endpoint that answers (its routes are POST only): the public path for a
    #: POST, an internal path for the other methods, which clients cannot call directly.
    target: str
    query: bool = False  # the request's fields come from the query string (GET)
    purpose: str | None = None  # the purpose of a route that takes none

    def label(self, method: str, path: str) -> str:
        """The route as audit rows and metrics name it: its path, with the method if not POST."""
        return path if method == "POST" else f"{method} {path}"


_MONITORING = "merchant_monitoring"
ROUTES = {
    ("POST", "/v1/verify"): Route(("verify",), VerifyRequest, "/v1/verify"),
    ("POST", "/v1/score"): Route(("score",), ScoreRequest, "/v1/score"),
    ("POST", "/v1/score_batch"): Route(("score", "batch"), BatchRequest, "/v1/score_batch"),
    ("POST", "/v1/watch"): Route(("watch",), WatchRequest, "/v1/watch"),
    ("DELETE", "/v1/watch"): Route(
        ("watch",), UnwatchRequest, "/v1/watch/remove", purpose=_MONITORING
    ),
    ("GET", "/v1/watch"): Route(
        ("watch",), WatchListQuery, "/v1/watch/list", query=True, purpose=_MONITORING
    ),
    ("GET", "/v1/changes"): Route(
        ("watch",), ChangesQuery, "/v1/changes/read", query=True, purpose=_MONITORING
    ),
    ("GET", "/v1/score_guide"): Route(
        ("score",), GuideQuery, "/v1/score_guide/read", query=True, purpose="score_guide"
    ),
}
PATHS = frozenset(path for _, path in ROUTES)


@dataclass
class Exchange:
    """One request's facts, shared by the gate and the endpoint (``scope['state']``)."""

    request_id: str
    endpoint: str  # the route template, or "unknown": never the raw path
    key: ApiKey | None = None
    body: BaseModel | None = None
    purpose: str | None = None
    subject: str | None = None
    outcome: dict = field(default_factory=dict)
    model_version: str | None = None
    publication: str | None = None  # the online-store publication the answer came from
    client: str | None = None  # the client's address (a trusted proxy's word for it)


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
    """The gate answers itself (the OpenAPI document, the metrics), after authentication."""

    def __init__(self, body: bytes, content_type: bytes = b"application/json"):
        super().__init__("served by the gate")
        self.body, self.content_type = body, content_type


class Refusal(BodyRefused):
    """A request the gate (or an endpoint) refuses: HTTP status and a stable code (and for
    a 405, the methods the route takes, for the ``Allow`` header HTTP asks for)."""

    def __init__(self, status: int, code: str, message: str, allow: str | None = None):
        super().__init__(status, code, message)
        self.allow = allow


def _valid_code(v: Any) -> str | None:
    """A household USCC as the audit may keep it: only a valid one (a 92-code with its
    check character), so an ID number or a name sent as ``uscc`` is never stored."""
    if not isinstance(v, str) or len(v) > 40:
        return None
    try:
        return valid_uscc(v)  # the schema's cached check: a batch is not validated twice
    except ValueError:
        return None


def _subject(body: dict) -> str | None:
    """The code(s) asked about, for the audit; anything but a valid code is dropped."""
    if isinstance(body.get("usccs"), list):
        return ";".join(_valid_code(v) or "?" for v in body["usccs"][:1000])
    return _valid_code(body.get("uscc"))


def _client(scope: Scope) -> str:
    """The client's address: the peer's, or the one a trusted proxy forwarded for (uvicorn
    rewrites ``scope['client']`` only for the peers in ``FORWARDED_ALLOW_IPS``, which
    ``credref serve`` sets from ``CREDREF_TRUSTED_PROXIES``)."""
    return str((scope.get("client") or ("?", 0))[0])[:64]


def replay(body: bytes) -> Receive:
    """An ASGI ``receive`` that hands over ``body`` whole, then reports a disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


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
        body_timeout_s: float = 10.0,
        answer_timeout_s: float = 10.0,
        audit_aggregate_s: float = 60.0,
        readiness: Callable[[], dict] | None = None,
    ):
        self.app = app
        #: what /readyz says beside the worker's own readiness: the publication and why
        #: it cannot be answered from (``{"cause": ...}``), else nothing
        self.readiness = readiness
        self.keys = keys
        self.audit = audit
        self.writer = GroupWriter(audit)
        self.tally = RefusalTally(self.writer.submit, audit_aggregate_s)
        self.max_body = max_body_bytes
        self.openapi = openapi  # the document to serve at /docs.json (else none)
        self.rate = TokenBucket(rate_limit)
        self.failures = TokenBucket(auth_failure_limit, burst=max(10.0, auth_failure_limit))
        self.body_timeout_s = body_timeout_s
        self.answer_timeout_s = answer_timeout_s
        self.metrics = metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._refuse_websocket(scope, receive, send)
            return
        if scope["type"] == "http" and apidocs.is_documentation(scope["path"]):
            await self._documentation(scope, send)
            return
        if scope["type"] == "http" and scope["path"] == "/readyz" and self.readiness:
            await self._ready(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ex = Exchange(uuid.uuid4().hex, route_label(scope["path"]), client=_client(scope))
        scope.setdefault("state", {})[STATE_KEY] = ex
        try:
            forward = await self._admit(scope, receive, ex)
            status, headers, body = await asyncio.wait_for(
                self._forward(*forward), self.answer_timeout_s
            )
        except BodyRefused as r:
            status, headers, body = self._error(ex, r)
        except Served as served:
            status, headers, body = 200, [(b"content-type", served.content_type)], served.body
        except TimeoutError:
            status, headers, body = self._error(
                ex, Refusal(503, "answer_timeout", "the answer took too long; retry")
            )
        except Exception as e:  # a bug must still give a JSON 500 and an audit row
            # The type only: an exception's text could quote a request's content.
            logger.error("request %s failed: %s", ex.request_id, type(e).__name__)
            status, headers, body = self._error(
                ex, Refusal(500, "internal_error", "the service failed; the request id is logged")
            )
        if ex.key is None and ex.outcome.get("error") in BEFORE_KEY:
            self.tally.add(_client(scope), ex.outcome["error"], status)
            await self._send(send, ex, status, headers, body)
            return
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

    def _authenticate(self, scope: Scope) -> ApiKey:
        secret = self._key(scope)
        client = _client(scope)
        if not secret:
            self._count_failure(client)
            raise Refusal(401, "missing_key", "an API key is required (Authorization: Bearer)")
        try:
            key = self.keys.authenticate(secret)  # an indexed read: microseconds
        except self.keys.place.errors:  # fail closed: no key is known while the store is away
            logger.error("key store unavailable: a request refused (503)")
            raise Refusal(
                503, "keys_unavailable", "API keys cannot be checked now; retry"
            ) from None
        if key is None:
            self._count_failure(client)
            raise Refusal(401, "invalid_key", "the API key is unknown or revoked")
        return key

    async def _admit(self, scope: Scope, receive: Receive, ex: Exchange) -> tuple:
        """Every check in order; returns what to forward (scope, receive) or raises."""
        if sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > MAX_HEADER_BYTES:
            raise Refusal(431, "headers_too_large", f"headers exceed {MAX_HEADER_BYTES} bytes")
        ex.key = key = self._authenticate(scope)
        path = scope["path"]
        if path == "/metrics":
            if "metrics" not in key.scopes:
                raise Refusal(403, "scope_not_granted", "this key lacks the scope 'metrics'")
            text, content_type = exposition()
            raise Served(text, content_type.encode())
        route = self._route(scope)
        ex.endpoint = route.label(scope["method"], path)
        missing = [s for s in route.scopes if s not in key.scopes]
        if missing:
            raise Refusal(403, "scope_not_granted", f"this key lacks the scope(s) {missing}")
        if not self.rate.allow(key.key_id):
            raise Refusal(429, "rate_limited", "request rate above this key's limit")
        if route.query:
            parsed = parse_query(scope.get("query_string", b""))
        else:
            check_content_type(scope["headers"])
            parsed = parse_object(await self._read_body(scope, receive))
        ex.subject = _subject(parsed)
        purpose = parsed.get("purpose", route.purpose)
        ex.purpose = purpose if isinstance(purpose, str) and purpose in PURPOSES else None
        ex.body = validate(parsed, route.body)
        ex.purpose = str(getattr(ex.body, "purpose", None) or route.purpose or ex.purpose)
        return self._forwarded_request(scope, route.target)

    @staticmethod
    def _route(scope: Scope) -> Route:
        path, method = scope["path"], scope["method"]
        if path not in PATHS:
            raise Refusal(404, "unknown_route", "no such route; see /docs.json")
        route = ROUTES.get((method, path))
        if route is None:
            allowed = ", ".join(sorted(m for m, p in ROUTES if p == path))
            raise Refusal(405, "method_not_allowed", f"use {allowed}", allow=allowed)
        return route

    def _forwarded_request(self, scope: Scope, target: str) -> tuple:
        """The request BentoML sees: a POST of an empty JSON object to the route's endpoint
        (which reads the request the gate validated from the exchange), no client headers
        but the host, no query string. None of the client's bytes reach BentoML's parser."""
        body = b"{}"
        headers = [(k, v) for k, v in scope["headers"] if k == b"host"]
        headers += [_JSON, (b"content-length", str(len(body)).encode())]
        forwarded = {
            **scope,
            "method": "POST",
            "path": target,
            "raw_path": target.encode(),
            "query_string": b"",
            "headers": headers,
        }
        return forwarded, replay(body)

    def _count_failure(self, client: str) -> None:
        if not self.failures.allow(client):
            raise Refusal(429, "too_many_failures", "too many failed authentications; slow down")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, within ``max_body_bytes`` and ``body_timeout_s``."""
        for name, value in scope["headers"]:
            if name == b"content-length" and not value.isdigit():
                raise Refusal(400, "invalid_json", "the Content-Length header is not a number")
            if name == b"content-length" and int(value) > self.max_body:
                raise Refusal(413, "body_too_large", f"the body exceeds {self.max_body} bytes")
        deadline = time.monotonic() + self.body_timeout_s
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise Refusal(
                    408, "body_timeout", f"the body did not arrive within {self.body_timeout_s:g} s"
                ) from None
            if message["type"] == "http.disconnect":
                raise Refusal(400, "invalid_json", "the client disconnected mid-body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise Refusal(413, "body_too_large", f"the body exceeds {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refused before any key is read, so counted like the other refusals before
        authentication (serving.tally), not audited one row each."""
        ex = Exchange(uuid.uuid4().hex, route_label(scope.get("path", "")))
        await receive()  # websocket.connect
        status, headers, body = self._error(
            ex, Refusal(400, "websocket_not_supported", "this service answers plain HTTP only")
        )
        self.tally.add(_client(scope), "websocket_not_supported", status)
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await self._send(send, ex, status, headers, body, "websocket.http.")
            return
        # the server can only close the handshake (it answers 403 itself)
        await send({"type": "websocket.close", "code": 1008})

    # --- forwarding, errors, audit --------------------------------------------------

    async def _documentation(self, scope: Scope, send: Send) -> None:
        """``/docs`` (Swagger UI), its files, and ``/docs.json``: no key, not audited."""
        path, found = scope["path"], None
        if scope["method"] not in ("GET", "HEAD"):
            status, kind, body = (
                405,
                "application/json",
                b'{"error": {"code": "method_not_allowed"}}',
            )
        elif path == apidocs.DOCUMENT_PATH and self.openapi is not None:
            body = json.dumps(self.openapi(), ensure_ascii=False).encode()
            status, kind = 200, "application/json"
        elif path == apidocs.PAGE_PATH:
            status, kind, body = 200, "text/html; charset=utf-8", apidocs.PAGE.encode()
        else:
            found = apidocs.asset(path.removeprefix(apidocs.ASSETS_PREFIX))
            status, kind, body = (200, found[1], found[0]) if found else (404, "text/plain", b"")
        headers = [(b"content-type", kind.encode())]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/readyz`` in JSON, as a load balancer and an operator read it: ready or not,
        the publication answered from, and when not ready, the cause and when to retry."""
        status, _, _ = await self._forward(scope, receive)  # the worker's own verdict
        found = self.readiness() if self.readiness else {}
        cause = found.get("cause") or (None if status == 200 else "starting")
        body = {"ready": cause is None, **found, **({"cause": cause} if cause else {})}
        headers = [_JSON]
        if cause:
            retry = b"600" if cause == "snapshot_stale" else b"5"
            headers.append((b"retry-after", retry))
        await send(
            {"type": "http.response.start", "status": 503 if cause else 200, "headers": headers}
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})

    async def _forward(self, scope: Scope, receive: Receive) -> tuple[int, list, bytes]:
        status, headers, chunks = 500, [], []

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        return status, headers, b"".join(chunks)

    def _error(self, ex: Exchange, r: BodyRefused) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        err: dict[str, Any] = {"code": r.code, "message": r.message}
        if r.details:
            err["details"] = r.details
        ex.outcome = {"error": r.code}
        body = json.dumps({"request_id": ex.request_id, "error": err}, ensure_ascii=False)
        headers = [_JSON]
        if r.status == 429:
            headers.append((b"retry-after", b"1"))
        elif r.status == 503:  # the audit store or the answer's time: brief, retry soon
            headers.append((b"retry-after", b"5"))
        elif getattr(r, "allow", None):
            headers.append((b"allow", r.allow.encode()))  # type: ignore[attr-defined]
        return r.status, headers, body.encode()

    async def _audit(self, ex: Exchange, status: int, started: float) -> None:
        """Commit the request's audit row (raises :class:`AuditUnavailable`)."""
        record = AuditRecord(
            request_id=ex.request_id,
            endpoint=ex.endpoint,
            outcome={
                "http": status,
                **ex.outcome,
                **({"publication": ex.publication} if ex.publication else {}),
            },
            platform=ex.key.platform if ex.key else None,
            key_id=ex.key.key_id if ex.key else None,
            client=ex.client,
            purpose=ex.purpose,
            subject=ex.subject,
            model_version=ex.model_version,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        submitted = time.perf_counter()
        await self.writer.submit(record)
        self.metrics.audit_commit.observe(time.perf_counter() - submitted)

    async def _audit_and_send(
        self,
        send: Send,
        ex: Exchange,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        started: float,
        prefix: str = "http.",
    ) -> None:
        if status >= 500 and "error" not in ex.outcome:
            status, headers, body = self._error(
                ex, Refusal(500, "internal_error", "the service failed")
            )
        try:
            await self._audit(ex, status, started)
        except AuditUnavailable:
            logger.error("audit store unavailable: request %s refused (503)", ex.request_id)
            status, headers, body = self._error(
                ex, Refusal(503, "audit_unavailable", "the audit log cannot be written; retry")
            )
        await self._send(send, ex, status, headers, body, prefix)

    async def _send(
        self,
        send: Send,
        ex: Exchange,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        prefix: str = "http.",
    ) -> None:
        outcome = ex.outcome.get("error") or ("ok" if status < 400 else f"http_{status}")
        self.metrics.answers.labels(ex.endpoint, outcome).inc()
        headers = [
            (k, v) for k, v in headers if k.lower() not in (b"content-length", b"x-request-id")
        ]
        headers += [
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", ex.request_id.encode()),
        ]
        await send({"type": prefix + "response.start", "status": status, "headers": headers})
        await send({"type": prefix + "response.body", "body": body, "more_body": False})
