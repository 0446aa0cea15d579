"""The framework floor for bench_serve.py: a BentoML 1.4 service with the reference
service's configuration (2 workers, metrics on, no access log, no tracing spans) whose
``POST /v1/score`` validates the same request body and answers a fixed JSON reply, as the
service's endpoints do (a ready ``JSONResponse``). No keys, no store, no model, no audit:
what BentoML itself costs per request on this machine.

    bentoml serve bentoml_floor:Floor --working-dir bench --port 3303
"""

from __future__ import annotations

import bentoml
from starlette.responses import JSONResponse

from serving.schemas import ScoreRequest

REPLY = {"status": "operating", "score": 612, "risk_class": "B", "reasons": []}


@bentoml.service(
    name="floor",
    workers=2,
    traffic={"timeout": 30},
    metrics={"enabled": True},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ".*"},
)
class Floor:
    @bentoml.api(route="/v1/score")
    async def score(self, body: ScoreRequest, /) -> dict:
        return JSONResponse({"uscc": body.uscc, **REPLY})  # type: ignore[return-value]
