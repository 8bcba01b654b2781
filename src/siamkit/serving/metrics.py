"""Prometheus metrics of one server process (prometheus-client; its own registry per app).

``siamkit_requests_total{endpoint, method, status}``, ``siamkit_request_seconds{endpoint}``
(latency histogram), ``siamkit_batch_size`` (inputs per forward pass), ``siamkit_queue_depth``
(requests waiting for the model) and ``siamkit_gallery_size`` (stored templates). ``endpoint`` is
the route's path template (``/v1/people/{name}``), so labels stay few. With ``--workers N`` each
process counts its own requests: a scrape sees the worker that answered it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The metric objects, on a registry of their own (two apps in one process do not clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "siamkit_requests", "HTTP requests by endpoint, method and status.",
            ["endpoint", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "siamkit_request_seconds", "Request latency by endpoint.", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "siamkit_batch_size", "Inputs per forward pass of the model.",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "siamkit_queue_depth", "Requests waiting for the model.", registry=self.registry
        )
        self.gallery_size = Gauge(
            "siamkit_gallery_size", "Templates stored in the gallery.", registry=self.registry
        )

    def track(self, queue_depth: Callable[[], float], gallery_size: Callable[[], float]) -> None:
        """Read the queue depth and gallery size when scraped."""
        self.queue_depth.set_function(queue_depth)
        self.gallery_size.set_function(gallery_size)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_template(scope: Scope) -> str:
    """The path template of the route that answered ``scope`` (set by the router), else
    ``"/static"`` for the static files or ``"unmatched"``."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    return "/static" if scope["path"].startswith("/static/") else "unmatched"


class MetricsMiddleware:
    """Count every HTTP request and time it, labelled by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = route_template(scope)
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
