"""Prometheus metrics of one server process (``GET /metrics``).

Each app owns its registry, so two apps in one process (tests) never mix their counts. With several
uvicorn workers each process reports its own numbers. Label values come only from what the server itself
serves (model names and versions it loaded), never from a request, so a client cannot grow the metrics:
requests for a model that is not served are counted under :data:`UNKNOWN_MODEL`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
UNKNOWN_MODEL = "_unknown"
"""The ``model`` label of requests for a model the server does not serve (model names start with a letter
or digit, so it never clashes with one)."""


class ServerMetrics:
    """Counters, histograms and gauges of the server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "leanml_requests",
            "Requests by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "leanml_request_seconds",
            "Time to answer a prediction request.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "leanml_batch_rows",
            "Rows per model call.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "leanml_queue_depth", "Requests waiting for a batch.", ["model"], registry=self.registry
        )
        self.model_version = Gauge(
            "leanml_model_version",
            "1 for the version being served.",
            ["model", "version"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "leanml_reloads", "Hot reloads by outcome.", ["model", "outcome"], registry=self.registry
        )
        self.reload_errors = Counter(
            "leanml_reload_errors",
            "Failures of the hot-reload loop itself (not refused bundles); the loop retries.",
            registry=self.registry,
        )
        self.internal_errors = Counter(
            "leanml_internal_errors",
            "Requests answered 500 because of a fault in the server (each is a bug).",
            registry=self.registry,
        )
        self.drift = Gauge(
            "leanml_input_drift_psi",
            "PSI of served inputs against training, per column.",
            ["model", "column"],
            registry=self.registry,
        )

    def watch_queue(self, model: str, depth: Callable[[], int]) -> None:
        """Report a model's queue depth from a callback, read at scrape time."""
        self.queue_depth.labels(model=model).set_function(depth)

    def serving(self, model: str, old: str | None, new: str) -> None:
        """Record that ``model`` now serves version ``new`` instead of ``old`` (its series is dropped)."""
        if old is not None and old != new:
            with contextlib.suppress(KeyError):
                self.model_version.remove(model, old)
        self.model_version.labels(model=model, version=new).set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
