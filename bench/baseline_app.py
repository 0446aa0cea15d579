"""The framework baseline for bench_serve.py: a bare Starlette app on uvicorn that answers
``POST /v1/score`` with the *same* scoring function as the service (online-store lookup,
encoding, ``ScoringModel.score_array``, reason texts), without BentoML, keys or audit.

    CREDREF_HOME=... uvicorn bench.baseline_app:app --workers 2
"""

from __future__ import annotations

import json

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from online_store.reader import OnlineStore
from scoring.model import encode_row, reason_details
from scoring.served import load_served_model, use_store
from settings import load_settings

_s = load_settings()
use_store(_s.bentoml_path)
_served = load_served_model(_s.tracking_uri, _s.registered_model)
_store = OnlineStore(_s.online_path)


async def score(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    with _store.current() as snap:
        subject = snap.get(body["uscc"])
    if subject is None or subject.features is None:
        return JSONResponse({"error": "not scored"}, 404)
    r = _served.model.score_array(np.asarray([encode_row(subject.features)]))
    return JSONResponse(
        {
            "uscc": subject.uscc,
            "as_of": snap.as_of,
            "score": int(r["score"][0]),
            "risk_class": str(r["risk_class"][0]),
            "reasons": reason_details(r["reasons"][0]),
        }
    )


app = Starlette(routes=[Route("/v1/score", score, methods=["POST"])])
