"""The platform-facing reference service (BentoML 1.4).

    bentoml serve serving.service:ReferenceService     (or: credref serve)

Routes: ``POST /v1/verify``, ``POST /v1/score``, ``POST /v1/score_batch``, ``GET
/v1/score_guide`` (what the served version's score, class and PD mean), and merchant
monitoring's ``/v1/watch`` and ``/v1/changes`` (:mod:`serving.monitoring`); BentoML's own
``/livez``, ``/readyz`` (ready once the model and the published snapshot are loaded and
agree), ``/metrics``, and the OpenAPI document at ``/docs.json``. Keys, scopes, limits,
request validation and the audit row of every request are the gate's work
(:mod:`serving.gateway`); the endpoints below only answer, from the current snapshot of
the online store and the MLflow champion imported into BentoML's model store.

Settings: ``CREDREF_*`` (see :mod:`settings`). At import they give only the
decorator's arguments (workers, address, timeout); every store is opened in the worker,
by ``ReferenceService.__init__`` and :class:`ServiceGateway`.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from datetime import date
from typing import Any
from urllib.parse import urlencode

import bentoml
import numpy as np

from online_store.reader import OnlineStore, Snapshot, too_old
from online_store.verification import FieldHasher, claimed_fields, judge
from records.codes import compact, uscc_problem
from scoring.model import REASON_SEPARATOR, encode_row, reason_details
from scoring.served import load_served_model, use_store
from serving.anchor import start_periodic
from serving.audit import AuditLog
from serving.gateway import Exchange, Gateway
from serving.keys import KeyStore
from serving.limits import (
    BUDGET_MESSAGES,
    Ask,
    LimitPolicy,
    LimitReached,
    LimitsUnavailable,
    VerifyLimits,
    seconds_to_next_day,
)
from serving.metrics import metrics
from serving.monitoring import MonitoringRoutes
from serving.objections import ObjectionStore
from serving.openapi import document as openapi_document
from serving.preflight import check_compatible, publication_readiness
from serving.relation import NO_RELATION, NO_RELATION_MESSAGE, asker_of, screen
from serving.replies import error as _error
from serving.replies import exchange as _exchange
from serving.replies import reply as _json
from serving.replies import request_of
from serving.schemas import (
    BatchRequest,
    BatchResponse,
    FieldVerdicts,
    ScoreGuideResponse,
    ScoreRequest,
    ScoreResponse,
    VerifyRequest,
    VerifyResponse,
)
from serving.state import located
from serving.watch import Cursors, WatchStore
from settings import Settings, load_settings

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024  # a full batch of 1,000 codes is about 25 KB
#: Retry-After of a stale publication: the daily refresh is late, not seconds away.
STALE_RETRY_S = 600

_settings = load_settings()  # for the decorator's arguments only


def _codes(item: dict) -> str:
    """The answer's reason codes as the audit row spells them."""
    return REASON_SEPARATOR.join(r["code"] for r in item["reasons"])


def _objected(item: dict) -> str:
    """The reason codes the answer marked under objection, as the audit row spells them."""
    return REASON_SEPARATOR.join(r["code"] for r in item["reasons"] if r["under_objection"])


@bentoml.service(
    name="credref",
    workers=_settings.workers,
    traffic={"timeout": _settings.traffic_timeout_s},
    http={"host": _settings.host, "port": _settings.port},
    # BentoML's HTTP metrics label by raw path (unbounded, and a path can carry a name):
    # credref's own metrics (serving.metrics) label by route template and are served by
    # the gate at /metrics to keys with the `metrics` scope.
    metrics={"enabled": False},
    # The audit log records every request; a second per-request access log would only
    # cost time (about a tenth of a worker's CPU at full load).
    logging={"access": {"enabled": False}},
    # No trace exporter is configured, so per-request spans would be built and dropped.
    tracing={"excluded_urls": ".*"},
)
class ReferenceService(MonitoringRoutes):
    def __init__(self) -> None:
        s = load_settings()
        use_store(s.bentoml_path)
        self.served = load_served_model(s.tracking_uri, s.registered_model)
        self.store = OnlineStore(s.online_path)
        policy = LimitPolicy(platform_daily=s.platform_daily_guesses)
        self.limits = VerifyLimits(located(s, "limits"), policy, timeout_s=s.audit_timeout_s)
        self.watches = WatchStore(located(s, "watch"), timeout_s=s.audit_timeout_s)
        self.objections = ObjectionStore(self.watches.place, timeout_s=s.audit_timeout_s)
        #: what a relation check raises when the limits or the watches cannot be read
        self._relations_down: tuple[type[BaseException], ...] = (
            LimitsUnavailable,
            *self.watches.place.errors,
        )
        self.cursors = Cursors(s.id_secret_bytes())
        self._today = s.domain_today  # the domain's clock (CREDREF_TODAY, else the calendar)
        self._review_url = s.review_url
        self._max_age = s.max_snapshot_age_days
        self._checked: tuple[str, str] | None = None
        self._age_set_at = 0.0
        self._lock = threading.Lock()
        with self._snapshot() as snap:  # refuses to start on no snapshot or a catalogue mismatch
            self._started_on = (snap.name, snap.as_of)
        self.hasher = FieldHasher(s.id_secret_bytes())
        self._anchoring = _start_anchoring(s)
        # Everything loaded so far (libraries, model, catalogue) lives as long as the
        # worker: out of the collector's sight, a full collection walks only what
        # requests create, instead of pausing a request for a whole-heap pass.
        gc.freeze()
        logger.info(
            "serving model %s (MLflow v%s, from %s), snapshot %s as of %s",
            self.served.tag,
            self.served.version,
            self.served.source,
            *self._started_on,
        )

    def _snapshot(self) -> Snapshot:
        """The current publication, open for one request (close it, or use ``with``)."""
        snap = self.store.current()
        seen = (snap.path.name, snap.name)  # a file, and the publication it holds now
        if seen != self._checked:
            try:
                check_compatible(self.served, snap)
            except Exception:
                snap.close()
                raise
            with self._lock:
                self._checked = seen
            self._age_set_at = 0.0
        if time.monotonic() - self._age_set_at > 60:  # the gauge moves by days
            metrics().snapshot_age.set(self._age_days(snap))
            self._age_set_at = time.monotonic()
        return snap

    def _age_days(self, snap: Snapshot) -> int:
        return (self._today() - date.fromisoformat(snap.as_of)).days

    def _stale(self, snap: Snapshot) -> bool:
        return too_old(self._age_days(snap), self._max_age)

    def _current(self, ctx: bentoml.Context, ex: Exchange) -> Snapshot | Any:
        """The publication to answer from, named in the audit row, or a 503 if stale."""
        snap = self._snapshot()
        ex.publication = snap.name  # answered or refused, the audit row names it
        if self._stale(snap):
            snap.close()
            refused = _error(
                ctx,
                ex,
                503,
                "snapshot_stale",
                "the published snapshot is older than allowed: the daily refresh has not "
                "run; retry later",
                retry_after_s=STALE_RETRY_S,
            )
            # what the refusal rested on, so that `credref audit replay` can rebuild it
            ex.outcome |= {"today": self._today().isoformat(), "max_age_days": self._max_age}
            return refused
        return snap

    def __is_ready__(self) -> bool:
        try:
            with self._snapshot() as snap:
                return not self._stale(snap)
        except Exception:
            return False

    # --- /v1/verify ---------------------------------------------------------------------

    @bentoml.api(route="/v1/verify")
    async def verify(self, ctx: bentoml.Context) -> VerifyResponse:
        """Is this registration real, and do the claimed fields match it? Never a stored
        value; every mismatch counts against the guessing limits (serving.limits)."""
        ex = _exchange(ctx)
        req = request_of(ex, VerifyRequest)
        snap = self._current(ctx, ex)
        if not isinstance(snap, Snapshot):
            return snap
        with snap:
            subject = snap.get(req.uscc)
        key = ex.key
        assert key is not None  # the gate authenticated the request
        claims = claimed_fields(req) if subject is not None else ()
        ask = Ask(asker_of(key), req.uscc, claims)
        verdicts: dict = {}

        def judged() -> dict[str, bool]:
            if subject is not None:
                verdicts.update(judge(self.hasher, req, subject))
            return {f: verdicts[f] == "match" for f in claims}

        try:
            self.limits.verify(ask, judged)
        except LimitReached as e:
            metrics().limits.labels(e.code).inc()
            details = [
                {"field": f, "problem": "limited for this household today"} for f in e.fields
            ]
            return _error(ctx, ex, 429, e.code, e.message, details, e.retry_after_s)
        except LimitsUnavailable:
            logger.error("limits store unavailable: request %s refused (503)", ex.request_id)
            return _error(
                ctx, ex, 503, "limits_unavailable", "verification limits cannot be checked; retry"
            )
        if subject is None:
            ex.outcome = {"found": False}
            return _json(
                VerifyResponse(
                    request_id=ex.request_id, uscc=req.uscc, found=False, as_of=snap.as_of
                )
            )
        fields = FieldVerdicts(**verdicts)
        for f, v in verdicts.items():
            metrics().verdicts.labels(f, str(v)).inc()
        ex.outcome = {
            "found": True,
            "status": subject.status,
            "fields": {k: str(v) for k, v in fields.model_dump().items()},
        }
        return _json(
            VerifyResponse(
                request_id=ex.request_id,
                uscc=req.uscc,
                found=True,
                status=subject.status,
                as_of=snap.as_of,
                fields=fields,
            )
        )

    # --- /v1/score and /v1/score_batch ----------------------------------------------------

    def _disputed(self, ctx: bentoml.Context, ex: Exchange, codes: list[str]) -> dict | Any:
        """The reason codes under objection per household (serving.objections), or a 503
        if they cannot be read: an answer never omits a marker it should carry."""
        try:
            return self.objections.disputed([c for c in codes if c])
        except self._relations_down:
            logger.error("objections unavailable: request %s refused (503)", ex.request_id)
            return _error(
                ctx, ex, 503, "limits_unavailable", "objections cannot be checked now; retry"
            )

    def _score(
        self, snap: Snapshot, usccs: list[str], with_pd: bool, disputed: dict[str, set[str]]
    ) -> list[dict]:
        """One answer per code, in order: a score, a status without score, or an error;
        each reason a record under objection stands behind marked ``under_objection``."""
        found = snap.get_many([u for u in usccs if u])
        operating = [u for u in dict.fromkeys(found) if found[u].features is not None]
        scored: dict[str, dict] = {}
        if operating:
            spec = self.served.model.spec
            X = np.asarray([encode_row(found[u].features, spec) for u in operating])  # type: ignore[arg-type]
            r = self.served.model.score_array(X)
            for i, u in enumerate(operating):
                objected = disputed.get(u, set())
                scored[u] = {
                    "score": int(r["score"][i]),
                    "risk_class": str(r["risk_class"][i]),
                    "reasons": [
                        {**d, "under_objection": d["code"] in objected}
                        for d in reason_details(r["reasons"][i])
                    ],
                    **({"pd": round(float(r["pd"][i]), 6)} if with_pd else {}),
                }
        out = []
        for u in usccs:
            if u not in found:
                out.append(
                    {
                        "uscc": u,
                        "error": {
                            "code": "not_found",
                            "message": "no household registered under this code on the as-of date",
                        },
                    }
                )
            elif u in scored:
                out.append({"uscc": u, "status": "operating", "as_of": snap.as_of, **scored[u]})
            else:
                out.append(
                    {
                        "uscc": u,
                        "status": found[u].status,
                        "as_of": snap.as_of,
                        "note": "not operating on the as-of date: no score",
                    }
                )
        return out

    def _with_pd(self, ex: Exchange) -> bool:
        """Whether this key may see the PD (and the model answering, for the audit)."""
        ex.model_version = self.served.version
        return ex.key is not None and "score:pd" in ex.key.scopes

    def _unrelated(self, ctx: bentoml.Context, ex: Exchange, codes: list[str]) -> dict | Any:
        """The codes this platform has no relation with, each with its refusal code
        (serving.relation), or a 503 if the relations cannot be checked."""
        assert ex.key is not None  # the gate authenticated the request
        try:
            return screen(self.limits, self.watches, asker_of(ex.key), codes, self._today())
        except self._relations_down:
            logger.error("relations unavailable: request %s refused (503)", ex.request_id)
            return _error(
                ctx, ex, 503, "limits_unavailable", "relations cannot be checked now; retry"
            )

    @bentoml.api(route="/v1/score")
    async def score(self, ctx: bentoml.Context) -> ScoreResponse:
        """Reference score, class A-D and up to four reasons for one household."""
        ex = _exchange(ctx)
        req = request_of(ex, ScoreRequest)
        refused = self._unrelated(ctx, ex, [req.uscc])
        if not isinstance(refused, dict):
            return refused
        if refused:
            code = refused[req.uscc]
            if code == NO_RELATION:
                return _error(ctx, ex, 403, code, NO_RELATION_MESSAGE)
            retry = seconds_to_next_day(time.time())
            return _error(ctx, ex, 429, code, BUDGET_MESSAGES[code], None, retry)
        disputed = self._disputed(ctx, ex, [req.uscc])
        if not isinstance(disputed, dict):
            return disputed
        snap = self._current(ctx, ex)
        if not isinstance(snap, Snapshot):
            return snap
        with snap:
            (item,) = self._score(snap, [req.uscc], self._with_pd(ex), disputed)
        if "error" in item:
            return _error(ctx, ex, 404, item["error"]["code"], item["error"]["message"])
        # what the platform received, for replay (online_store.replay): no input, no personal data
        ex.outcome = {
            "status": item["status"],
            "class": item.get("risk_class"),
            **({"score": item["score"], "reasons": _codes(item)} if "score" in item else {}),
            **({"objected": _objected(item)} if "score" in item else {}),
        }
        answer = ScoreResponse(
            request_id=ex.request_id,
            model_version=self.served.version,
            review_url=review_url(self._review_url, ex.request_id),
            **item,
        )
        return _json(answer)

    @bentoml.api(route="/v1/score_batch")
    async def score_batch(self, ctx: bentoml.Context) -> BatchResponse:
        """Up to 1,000 households per call; each item answered as /v1/score would."""
        ex = _exchange(ctx)
        req = request_of(ex, BatchRequest)
        snap = self._current(ctx, ex)
        if not isinstance(snap, Snapshot):
            return snap
        with_pd = self._with_pd(ex)
        problems = [uscc_problem(u, household=True) for u in req.usccs]
        codes = [compact(u) if p is None else "" for u, p in zip(req.usccs, problems, strict=True)]
        refused = self._unrelated(ctx, ex, [c for c in codes if c])
        if not isinstance(refused, dict):
            snap.close()
            return refused
        asked = [c for c in codes if c and c not in refused]
        disputed = self._disputed(ctx, ex, asked)
        if not isinstance(disputed, dict):
            snap.close()
            return disputed
        with snap:
            answers = self._score(snap, asked, with_pd, disputed)
        it = iter(answers)
        results = [
            {"index": i, **_batch_item(c, p, refused, it)}
            for i, (c, p) in enumerate(zip(codes, problems, strict=True))
        ]
        for r in results:  # every answered item: the household's path to a human review
            if "error" not in r:
                r["review_url"] = review_url(self._review_url, ex.request_id, r["index"])
        ex.outcome = {
            "results": ";".join(
                r["error"]["code"] if "error" in r else r.get("risk_class", r["status"])
                for r in results
            )
        }
        answer = BatchResponse(
            request_id=ex.request_id,
            model_version=self.served.version,
            as_of=snap.as_of,
            results=results,
        )
        return _json(answer)

    @bentoml.api(route="/v1/score_guide/read")
    async def score_guide(self, ctx: bentoml.Context) -> ScoreGuideResponse:
        """``GET /v1/score_guide``: what the served version's score, class and PD mean
        (outcome and horizon, the rating philosophy, each class's fixed band and observed
        bad rate, the score-to-odds table, the override); no household is named."""
        ex = _exchange(ctx)
        ex.model_version = self.served.version
        guide = self.served.model.guide
        if guide is None:
            return _error(
                ctx,
                ex,
                503,
                "guide_unavailable",
                "the served model version carries no score guide: it was trained before "
                "guides existed; train and promote a new version",
            )
        ex.outcome = {"guide": self.served.version}
        answer = ScoreGuideResponse(
            request_id=ex.request_id, model_version=self.served.version, **guide
        )
        return _json(answer)


def review_url(base: str, request_id: str, item: int | None = None) -> str:
    """The review address for one answer: the configured page with the request's reference
    (and the batch item's position), which finds the audited answer; no household data."""
    query = {"ref": request_id, **({"item": str(item)} if item is not None else {})}
    return f"{base}{'&' if '?' in base else '?'}{urlencode(query)}"


def _batch_item(code: str, problem: str | None, refused: dict[str, str], scored: Any) -> dict:
    """A batch item's answer: the next scored answer, or why it is refused (an invalid
    item is named by its position only, never by what was sent)."""
    if not code:
        return {"error": {"code": "invalid_uscc", "message": problem}}
    if code in refused:
        message = (
            NO_RELATION_MESSAGE if refused[code] == NO_RELATION else BUDGET_MESSAGES[refused[code]]
        )
        return {"uscc": code, "error": {"code": refused[code], "message": message}}
    return next(scored)


def _start_anchoring(s: Settings) -> threading.Event | None:
    """Periodic audit checkpoints, from the first worker only (one writer is enough)."""
    if not (s.audit_anchor_minutes and s.audit_anchor_key and s.audit_anchor_dir):
        return None
    if bentoml.server_context.worker_index not in (None, 1):
        return None

    log = AuditLog(located(s, "audit"), timeout_s=s.audit_timeout_s)
    return start_periodic(log, s.audit_anchor_key, s.audit_anchor_dir, s.audit_anchor_minutes)


class ServiceGateway(Gateway):
    """The gate with the service's stores, opened in the worker (never at import)."""

    def __init__(self, app: Any, settings: Settings | None = None) -> None:
        s = settings or load_settings()
        super().__init__(
            app,
            keys=KeyStore(located(s, "keys")),
            audit=AuditLog(located(s, "audit"), timeout_s=s.audit_timeout_s),
            rate_limit=s.rate_limit / s.workers,
            auth_failure_limit=s.auth_failure_limit / s.workers,
            max_body_bytes=MAX_BODY_BYTES,
            openapi=lambda: openapi_document(ReferenceService.openapi_spec.asdict()),  # type: ignore[attr-defined]
            body_timeout_s=s.body_timeout_s,
            answer_timeout_s=s.answer_timeout_s,
            audit_aggregate_s=s.audit_aggregate_s,
            readiness=lambda: publication_readiness(s),
        )


ReferenceService.add_asgi_middleware(ServiceGateway)  # type: ignore[attr-defined]  # a bentoml.Service
