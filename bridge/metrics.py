"""Prometheus metrics of the bridge (served on ``METRICS_PORT_BRIDGE`` by ``plantnotify bridge``).

Module-level, as prometheus-client intends: one set per process, however many bridges a test
runs in it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUSHES = Counter(
    "plantnotify_bridge_pushes_total",
    "Push attempts at FCM by outcome (sent, retry, device_gone, config, failed, unknown).",
    ["outcome"],
)
DELIVERIES = Counter(
    "plantnotify_bridge_deliveries_total",
    "Pushes that reached a final state (sent, device_removed, failed, exhausted).",
    ["status"],
)
DECISIONS = Counter(
    "plantnotify_bridge_decisions_total",
    "Final push decisions (pushed, suppressed, no_devices, ignored).",
    ["state"],
)
SUPPRESSED_BY_RECEIPT = Counter(
    "plantnotify_bridge_suppressed_by_receipt_total",
    "Terminal events not pushed because a device confirmed them in time.",
)
DECISION_LATENCY = Histogram(
    "plantnotify_bridge_decision_latency_seconds",
    "From the event's publication to the final push decision.",
    ["state"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 300),
)
PUSH_LATENCY = Histogram(
    "plantnotify_bridge_push_latency_seconds",
    "From the event's publication to FCM accepting the push.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 300),
)
RECEIPTS = Counter(
    "plantnotify_bridge_receipts_total",
    "Receipts by result (accepted, duplicate, malformed, foreign).",
    ["result"],
)
CONFIG_ERRORS = Counter(
    "plantnotify_bridge_fcm_config_errors_total",
    "FCM attempts that failed on our configuration (OAuth refresh, 401/403, wrong project).",
)
LIVE_SESSIONS = Gauge(
    "plantnotify_bridge_live_sessions", "Live MQTT connections of users, per the broker."
)
LIVE_USERS = Gauge("plantnotify_bridge_live_users", "Users with at least one live connection.")
IN_SYNC = Gauge(
    "plantnotify_bridge_session_picture_in_sync",
    "1 when the bridge knows who is online (connected and replayed), 0 otherwise.",
)
DELIVERY_LATENCY = Histogram(
    "plantnotify_delivery_latency_seconds",
    "From an event's completion (completedAt/failedAt) to a device having it, as the device's "
    "receipt reports it (device clock), by transport (tcp, ws, push).",
    ["transport"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
