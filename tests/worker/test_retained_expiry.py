"""The worker clears expired retained events itself. On MQTT 3.1.1 engines (NATS) a new
subscriber then gets exactly what an MQTT 5 message expiry would have left it; on Mosquitto the
broker lets go of the expired messages it would otherwise keep in memory for good."""

from __future__ import annotations

import json
import secrets
import time

import psycopg2
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plantnotify.contracts.topics import analyses_filter, analysis_topic
from plantnotify.service_mqtt import service_connect_options
from tests.support.broker import BrokerFactory
from tests.support.mqtt import V311, TestClient, connect
from tests.support.nats import NatsHandle
from worker.presence import libpq_dsn
from worker.retained_expiry import RetainedExpirySweeper


def _insert(database_url: str, user: str, analysis: str, expires_in: str) -> None:
    _insert_many(database_url, [(user, analysis)], expires_in)


def _insert_many(database_url: str, pairs: list[tuple[str, str]], expires_in: str) -> None:
    with psycopg2.connect(libpq_dsn(database_url)) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO events (id, user_id, analysis_id, type, payload, created_at, "
            "expires_at, published_at) VALUES (%s, %s, %s, 'AnalysisProgress', %s, now(), "
            "now() + CAST(%s AS interval), now())",
            [
                (secrets.token_hex(8), user, analysis, json.dumps({"n": 1}), expires_in)
                for user, analysis in pairs
            ],
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
        # The cluster is shared with later tests (a service's "users/#" must find nothing).
        svc = connect(
            nats_cluster.ports[0],
            "svc-rexp",
            nats_cluster.token("svc-rexp", service=True),
            "svc-rexp-1",
            protocol=V311,
        )
        for analysis in (renewed, live):
            svc.publish(analysis_topic(user, analysis), b"", retain=True)
        svc.close()


RETAINED_COUNT = "$SYS/broker/retained messages/count"
HEAP = "$SYS/broker/heap/current"
UPTIME = "$SYS/broker/uptime"


class _SysTree:
    """The broker's own counters. Mosquitto publishes them every 10 s (``sys_interval``), each
    only when it changed (the uptime always does), so the latest value seen is the current."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.latest: dict[str, int] = {}
        for topic in (RETAINED_COUNT, HEAP, UPTIME):
            assert client.subscribe(topic) == [1]

    def after_next_tick(self, timeout: float = 25.0) -> dict[str, int]:
        """The counters as of a publication that started after this call."""
        self._take(0.0)
        self.latest.pop(UPTIME, None)
        deadline = time.monotonic() + timeout
        while UPTIME not in self.latest and time.monotonic() < deadline:
            self._take(0.5)
        self._take(0.5)  # the rest of that tick
        assert all(t in self.latest for t in (UPTIME, HEAP, RETAINED_COUNT)), self.latest
        return dict(self.latest)

    def _take(self, wait: float) -> None:
        for message in self.client.drain(wait):
            if message.topic in (RETAINED_COUNT, HEAP, UPTIME):
                self.latest[message.topic] = int(message.payload.split()[0])


def test_mosquitto_lets_go_of_expired_retained_events_only_when_cleared(
    broker_factory: BrokerFactory, database_url: str
) -> None:
    """Mosquitto 2.0 keeps an expired retained message until its topic is touched again (our
    analysis topics never are): the sweeper's clear is what frees it. Live events stay."""
    broker = broker_factory()
    settings = broker.settings
    assert settings.mqtt_protocol == 5
    user = f"rexpm{secrets.token_hex(3)}"
    expired = [f"old{i:03d}" for i in range(300)]
    live = "live"
    _insert_many(database_url, [(user, a) for a in expired], "2 seconds")
    _insert(database_url, user, live, "1 hour")

    svc = connect(broker.port, "svc-rexpm", broker.token("svc-rexpm", service=True), "svc-rexpm")
    try:
        sys_tree = _SysTree(svc)
        before = sys_tree.after_next_tick()
        soon = Properties(PacketTypes.PUBLISH)
        soon.MessageExpiryInterval = 2
        payload = b"x" * 400  # about the size of a Completed event
        for analysis in expired:
            svc.client.publish(
                analysis_topic(user, analysis), payload, qos=1, retain=True, properties=soon
            )
        svc.publish(analysis_topic(user, live), b"live", retain=True)
        time.sleep(3)  # every "old" event has expired, in PostgreSQL and for the broker
        kept = sys_tree.after_next_tick()
        # Nothing touched the topics: the broker still holds every expired message.
        assert kept[RETAINED_COUNT] >= before[RETAINED_COUNT] + len(expired), (before, kept)

        sweeper = RetainedExpirySweeper(
            database_url, service_connect_options(settings, "worker-expiry")
        )
        sweeper.mqtt.start()
        try:
            # (other tests may leave expired events of their own in this database)
            assert sweeper.sweep() >= len(expired)
        finally:
            sweeper.stop()
        cleared = sys_tree.after_next_tick()
    finally:
        svc.close()

    assert cleared[RETAINED_COUNT] <= kept[RETAINED_COUNT] - len(expired), (kept, cleared)
    # At least the payloads are freed (2.0.11 keeps an empty topic node, ~190 bytes each).
    assert cleared[HEAP] <= kept[HEAP] - len(expired) * len(payload), (kept, cleared)

    sub = connect(broker.port, user, broker.token(user), f"{user}-late")
    try:
        assert sub.subscribe(analyses_filter(user)) == [1]
        got = [(m.topic, m.payload) for m in sub.drain(1.0)]
        assert got == [(analysis_topic(user, live), b"live")]
    finally:
        sub.close()
