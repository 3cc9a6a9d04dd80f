"""Prometheus metrics of the worker (served on METRICS_PORT_WORKER)."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("plantnotify.worker.metrics")

JOBS_IN_FLIGHT = Gauge("plantnotify_worker_jobs_in_flight", "Analyses this worker is running.")
JOBS = Counter(
    "plantnotify_worker_jobs_total",
    "Job deliveries by outcome (completed, failed, finished_before, held_elsewhere, "
    "handed_back, dead_lettered).",
    ["outcome"],
)
N8N_SECONDS = Histogram(
    "plantnotify_n8n_request_seconds",
    "Duration of one N8N webhook call.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 180, 300, 600),
)
N8N_FAILURES = Counter("plantnotify_n8n_failures_total", "Failed N8N attempts by kind.", ["kind"])
EVENTS_PUBLISHED = Counter(
    "plantnotify_outbox_events_published_total", "Events published to MQTT (PUBACK received)."
)
PUBLISH_FAILURES = Counter(
    "plantnotify_outbox_publish_failures_total",
    "Outbox publishes that failed (the event stays in the outbox and is published again).",
    ["kind"],
)
for _kind in ("not_connected", "not_acknowledged"):
    PUBLISH_FAILURES.labels(kind=_kind)  # every series exists from the start (rate() works)
EVENTS_REPUBLISHED = Counter(
    "plantnotify_outbox_events_republished_total",
    "Retained events re-published after a broker restart.",
)
OUTBOX_LAG = Gauge(
    "plantnotify_outbox_lag_seconds",
    "Age of the oldest event not yet published (0 when the outbox is empty).",
)
OUTBOX_DELAY = Histogram(
    "plantnotify_outbox_publish_delay_seconds",
    "Time from an event's commit to its PUBACK.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
OUTBOX_LEADER = Gauge(
    "plantnotify_outbox_leader", "1 while this process leads at least one outbox partition."
)
OUTBOX_PARTITIONS_LED = Gauge(
    "plantnotify_outbox_partitions_led", "Outbox partitions this process publishes right now."
)


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on ``port``; 0 turns it off."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)
