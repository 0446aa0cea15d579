"""Merchant monitoring's endpoints: the watch list and the change feed (scope ``watch``).

    POST   /v1/watch     watch (or renew) up to 1,000 households verified with a match
    DELETE /v1/watch     stop watching them
    GET    /v1/watch     how many are watched, and a page of them
    GET    /v1/changes   this platform's events after a cursor

Mixed into :class:`serving.service.ReferenceService`, whose ``__init__`` opens what these
use: ``watches`` (:class:`serving.watch.WatchStore`), ``cursors``, ``limits`` (the last
match per household), ``served`` (the model, for a new watch's first answer) and the
current publication. The gate has already authenticated, checked the scope and validated
the request (GET and DELETE reach these as POSTs to internal routes,
:data:`serving.gateway.ROUTES`); every call is audited there, with the codes named.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import bentoml
from starlette.responses import Response

from online_store.reader import Snapshot
from records.codes import compact, uscc_problem
from scoring.served import ServedModel
from serving.events import baseline
from serving.limits import BUDGET_MESSAGES, LimitsUnavailable, VerifyLimits
from serving.relation import NO_RELATION_MESSAGE, asker_of, screen
from serving.replies import error, exchange, reply, request_of
from serving.schemas import (
    ChangesQuery,
    ChangesResponse,
    UnwatchRequest,
    WatchedCode,
    WatchListQuery,
    WatchListResponse,
    WatchRequest,
    WatchResponse,
    WatchResult,
)
from serving.watch import (
    STATUS_ONLY,
    CursorExpired,
    CursorInvalid,
    Cursors,
    Refused,
    WatchStore,
)

_UNAVAILABLE = ("watch_unavailable", "the watch store cannot be used now; retry")
_REFUSALS = {
    "no_relation": NO_RELATION_MESSAGE,
    **BUDGET_MESSAGES,
}


def _valid(usccs: list[str]) -> tuple[list[str], dict[int, str]]:
    """The codes in compact form ('' where invalid), and each invalid one's problem."""
    problems = {i: p for i, u in enumerate(usccs) if (p := uscc_problem(u, household=True))}
    return [compact(u) if i not in problems else "" for i, u in enumerate(usccs)], problems


def _refused(index: int, uscc: str | None, code: str, message: str) -> WatchResult:
    # an invalid item is named by its position only: its value is the client's, and could
    # be anything (an ID number sent by mistake)
    error = {"code": code, "message": message}
    return WatchResult(index=index, uscc=uscc, watched=False, error=error)  # type: ignore[arg-type]


class MonitoringRoutes:
    watches: WatchStore
    cursors: Cursors
    limits: VerifyLimits
    served: ServedModel
    # ReferenceService's (annotations only: nothing here shadows them)
    _today: Callable[[], date]  # the domain's clock
    _current: Callable[[bentoml.Context, Any], Any]  # the publication, or a 503

    @bentoml.api(route="/v1/watch")
    async def watch(self, ctx: bentoml.Context) -> WatchResponse:
        """Watch (or renew for 400 days) households this platform has a relation with
        (serving.relation: an operator match in the last 30 days, or watched already);
        each item is answered on its own, an invalid one named by its position."""
        ex = exchange(ctx)
        req = request_of(ex, WatchRequest)
        key = ex.key
        assert key is not None  # the gate authenticated the request
        snap = self._current(ctx, ex)
        if not isinstance(snap, Snapshot):
            return snap
        codes, problems = _valid(req.usccs)
        valid = [c for c in codes if c]
        today: date = self._today()
        try:
            with snap:
                refused = screen(self.limits, self.watches, asker_of(key), valid, today)
                caps = (key.watch_cap, key.platform_watch_cap)
                allowed = [c for c in valid if c not in refused]
                done: dict = self.watches.watch(key.platform, key.key_id, allowed, today, caps)
                done.update({c: Refused(r, _REFUSALS[r]) for c, r in refused.items()})
                new = [c for c, r in done.items() if isinstance(r, str)]
                baseline(self.watches, snap, new, self.served.model, self.served.version)
        except LimitsUnavailable:
            return error(
                ctx, ex, 503, "limits_unavailable", "past matches cannot be checked; retry"
            )
        except self.watches.place.errors:
            return error(ctx, ex, 503, *_UNAVAILABLE)
        results = []
        for i, code in enumerate(codes):
            got = done.get(code) if code else None
            if i in problems:
                results.append(_refused(i, None, "invalid_uscc", problems[i]))
            elif isinstance(got, str):
                results.append(WatchResult(index=i, uscc=code, watched=True, expires_on=got))
            else:
                assert got is not None
                results.append(_refused(i, code, got.code, got.message))
        ex.outcome = {
            "results": ";".join("watched" if r.watched else r.error.code for r in results)  # type: ignore[union-attr]
        }
        return reply(WatchResponse(request_id=ex.request_id, results=results))

    @bentoml.api(route="/v1/watch/remove")
    async def unwatch(self, ctx: bentoml.Context) -> WatchResponse:
        """Stop watching (``DELETE /v1/watch``): no events for these households from now."""
        ex = exchange(ctx)
        req = request_of(ex, UnwatchRequest)
        assert ex.key is not None
        codes, problems = _valid(req.usccs)
        try:
            gone = self.watches.unwatch(ex.key.platform, [c for c in codes if c])
        except self.watches.place.errors:
            return error(ctx, ex, 503, *_UNAVAILABLE)
        results = [
            _refused(i, None, "invalid_uscc", problems[i])
            if i in problems
            else WatchResult(index=i, uscc=code, watched=False)
            for i, code in enumerate(codes)
        ]
        ex.outcome = {
            "results": ";".join(
                "invalid_uscc" if not c else "unwatched" if c in gone else "not_watched"
                for c in codes
            )
        }
        return reply(WatchResponse(request_id=ex.request_id, results=results))

    @bentoml.api(route="/v1/watch/list")
    async def watch_list(self, ctx: bentoml.Context) -> WatchListResponse:
        """``GET /v1/watch?after=CODE&limit=N``: the count of this platform's live watches
        and a page of them in code order (never another platform's)."""
        ex = exchange(ctx)
        req = request_of(ex, WatchListQuery)
        assert ex.key is not None
        today: date = self._today()
        try:
            # one more than the page: whether more follow, said exactly
            count, page = self.watches.listing(ex.key.platform, today, req.after, req.limit + 1)
        except self.watches.place.errors:
            return error(ctx, ex, 503, *_UNAVAILABLE)
        more, page = len(page) > req.limit, page[: req.limit]
        ex.outcome = {"count": count, "page": len(page)}
        return reply(
            WatchListResponse(
                request_id=ex.request_id,
                count=count,
                usccs=[WatchedCode(uscc=c, expires_on=e) for c, e in page],
                next=page[-1][0] if page else req.after,
                more=more,
            )
        )

    @bentoml.api(route="/v1/changes/read")
    async def changes(self, ctx: bentoml.Context) -> ChangesResponse:
        """``GET /v1/changes?after=CURSOR&limit=N``: this platform's events after the
        cursor, oldest first; pass ``next`` back as ``after``. The same cursor always
        gives the same events (at least once: an event's id is its identity)."""
        ex = exchange(ctx)
        req = request_of(ex, ChangesQuery)
        assert ex.key is not None
        platform = ex.key.platform
        try:
            after = self.cursors.decode(platform, req.after)
            # a key reads what its scopes would get from /v1/score, and nothing more
            kinds = None if "score" in ex.key.scopes else STATUS_ONLY
            page = self.watches.page(platform, after, req.limit, kinds)
        except CursorInvalid as e:
            return error(ctx, ex, 400, "invalid_cursor", str(e))
        except CursorExpired as e:
            return error(ctx, ex, 410, "cursor_expired", str(e))
        except self.watches.place.errors:
            return error(ctx, ex, 503, *_UNAVAILABLE)
        # who learnt what about which household, for the household's query record
        ex.subject = ";".join(code for _, code, _, _ in page.events) or None
        ex.outcome = {"events": ";".join(kind for _, _, kind, _ in page.events)}
        # The events are stored as the JSON they are given in: spliced, not re-encoded.
        events = ",".join(f'{{"id":"{i}",{b[1:]}' for i, _, _, b in page.events)
        text = (
            f'{{"request_id":"{ex.request_id}","events":[{events}],'
            f'"next":"{self.cursors.encode(platform, page.last_id)}",'
            f'"more":{"true" if page.more else "false"}}}'
        )
        return Response(text, media_type="application/json")  # type: ignore[return-value]
