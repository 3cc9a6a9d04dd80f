"""On MQTT 3.1.1 engines (NATS) the worker clears expired retained events itself: a new
subscriber gets exactly what an MQTT 5 message expiry would have left it."""

from __future__ import annotations

import json
import secrets

import psycopg2

from plantnotify.contracts.topics import analyses_filter, analysis_topic
from plantnotify.service_mqtt import service_connect_options
from tests.support.mqtt import V311, connect
from tests.support.nats import NatsHandle
from worker.presence import libpq_dsn
from worker.retained_expiry import RetainedExpirySweeper


def _insert(database_url: str, user: str, analysis: str, expires_in: str) -> None:
    with psycopg2.connect(libpq_dsn(database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO events (id, user_id, analysis_id, type, payload, created_at, "
            "expires_at, published_at) VALUES (%s, %s, %s, 'AnalysisProgress', %s, now(), "
            "now() + CAST(%s AS interval), now())",
            (secrets.token_hex(8), user, analysis, json.dumps({"n": 1}), expires_in),
        )


def test_expired_retained_events_are_cleared_and_live_ones_kept(
    nats_cluster: NatsHandle, database_url: str
) -> None:
    user = f"rexp{secrets.token_hex(3)}"
    expired, renewed, live = "a-expired", "b-renewed", "c-live"
    _insert(database_url, user, expired, "-1 hour")
    _insert(database_url, user, renewed, "-1 hour")
    _insert(database_url, user, renewed, "1 hour")  # a newer event that has not expired
    _insert(database_url, user, live, "1 hour")
    svc = connect(
        nats_cluster.ports[0],
        "svc-rexp",
        nats_cluster.token("svc-rexp", service=True),
        "svc-rexp-1",
        protocol=V311,
    )
    for analysis in (expired, renewed, live):
        svc.publish(analysis_topic(user, analysis), analysis.encode(), retain=True)
    svc.close()

    settings = nats_cluster.settings
    assert settings.mqtt_protocol == 4
    sweeper = RetainedExpirySweeper(
        database_url, service_connect_options(settings, "worker-expiry")
    )
    sweeper.mqtt.start()
    try:
        assert sweeper.sweep() >= 1
        assert sweeper.sweep() == 0  # the cursor moved past them
    finally:
        sweeper.stop()

    sub = connect(
        nats_cluster.ports[2], user, nats_cluster.token(user), f"{user}-late", protocol=V311
    )
    try:
        assert sub.subscribe(analyses_filter(user)) == [1]
        got = sorted(m.payload.decode() for m in sub.drain(1.0))
        assert got == [renewed, live]
    finally:
        sub.close()
