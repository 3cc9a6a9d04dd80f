"""Prometheus metrics of one API app (own registry, so several apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

UPLOAD_OUTCOMES = (
    "accepted",
    "too_large",
    "not_an_image",
    "missing_field",
    "bad_request",
    "queue_unavailable",
    "busy",
)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.uploads = Counter(
            "plantnotify_api_uploads",
            "Image uploads by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in UPLOAD_OUTCOMES:
            self.uploads.labels(outcome)  # every series exists from the start (rate() works)
        self.requeued = Counter(
            "plantnotify_api_jobs_requeued",
            "Jobs of stored uploads published by the requeue sweep (the upload's own publish "
            "never got its confirm, e.g. the API process died).",
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "plantnotify_api_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    def upload(self, outcome: str) -> None:
        self.uploads.labels(outcome).inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(method, route, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
