"""credref's own Prometheus metrics (``prometheus_client``), and their exposition.

Every label takes its value from a closed set: the route *template* (an unknown path is
``unknown``), an error code from credref's own list, a field name, a verdict. So the
metrics' size does not grow with traffic, and no path or value a client sent is ever kept.
BentoML's own per-path HTTP metrics are switched off in :mod:`serving.service` for that
reason (they label by raw path).

Under ``bentoml serve`` every worker writes its samples to BentoML's multiprocess folder
(``PROMETHEUS_MULTIPROC_DIR``, set before the worker builds the app, which is why the
metrics are created lazily, per process, by :func:`metrics`) and ``/metrics`` adds them up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

ROUTE_LABELS = frozenset(
    {
        "/v1/verify",
        "/v1/score",
        "/v1/score_batch",
        "/v1/watch",
        "/v1/changes",
        "/docs.json",
        "/metrics",
    }
)
UNKNOWN_ROUTE = "unknown"


def route_label(path: str) -> str:
    """The path if it is a route's (the gate adds the method for GET and DELETE), else
    ``unknown``."""
    return path if path in ROUTE_LABELS else UNKNOWN_ROUTE


@dataclass(frozen=True)
class Metrics:
    answers: Any  # Counter: endpoint, outcome ("ok" or the error code)
    verdicts: Any  # Counter: field, verdict
    limits: Any  # Counter: limit (the refusal code)
    audit_commit: Any  # Histogram: seconds from submitting a row to its commit
    snapshot_age: Any  # Gauge: days between the served publication's date and today


_metrics: Metrics | None = None


def metrics() -> Metrics:
    """This process's metrics (created on first use, after BentoML set up the folder)."""
    global _metrics
    if _metrics is None:
        # After BentoML set PROMETHEUS_MULTIPROC_DIR: the client reads it when a metric is made.
        from prometheus_client import Counter, Gauge, Histogram

        _metrics = Metrics(
            answers=Counter(
                "credref_answers", "Answers by route and outcome", ["endpoint", "outcome"]
            ),
            verdicts=Counter(
                "credref_verdicts", "Verification verdicts by field", ["field", "verdict"]
            ),
            limits=Counter("credref_limits_hit", "Requests refused by a guessing limit", ["limit"]),
            audit_commit=Histogram(
                "credref_audit_commit_seconds",
                "Time from an audit row's submission to its commit",
                buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            ),
            snapshot_age=Gauge(
                "credref_snapshot_age_days",
                "Days between the served publication's as-of date and today",
                multiprocess_mode="livemax",
            ),
        )
    return _metrics


def exposition() -> tuple[bytes, str]:
    """The text format of every worker's metrics (or this process's, outside BentoML)."""
    # Imported with the metrics (see metrics()): the multiprocess folder is set by then.
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    metrics()  # so the families exist even before the first request
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess  # the multiprocess mode only

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
