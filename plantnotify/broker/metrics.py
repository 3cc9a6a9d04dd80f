"""Prometheus metrics of the broker, served by ``plantnotify broker`` on METRICS_PORT_BROKER.

Mosquitto has no Prometheus endpoint, and only the plugin sees why a CONNECT was refused. The
plugin publishes its counters (retained ``BrokerStats`` on ``plantnotify/broker/stats``); this
module subscribes with a service token and exposes them:

    plantnotify_mqtt_connects_total{result}   CONNECTs by outcome (accepted, expired,
                                              invalid_token, identity, limit, error); restarts
                                              from 0 with the broker, as counters may
    plantnotify_mqtt_live_connections         live authenticated connections
    plantnotify_broker_up                     1 while this exporter's own service connection
                                              to the broker is up (it answers and accepts
                                              tokens), 0 otherwise

Where this container can mint no token (asymmetric MQTT tokens: the broker holds only the public
key), the exporter cannot subscribe: the CONNECT counters and live connections stay at 0 and
``plantnotify_broker_up`` says whether the broker answers MQTT (``plantnotify.broker.probe``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError

from plantnotify.broker.probe import ProbeFailed, probe_mqtt
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.events import BrokerStats, ConnectCounts
from plantnotify.contracts.topics import BROKER_STATS_TOPIC
from plantnotify.mqtt import ConnectOptions, Credentials, Message, MqttClient
from plantnotify.settings import Settings

log = logging.getLogger("plantnotify.broker.metrics")

EXPORTER_USER = "broker-metrics"
TOKEN_TTL_SECONDS = 3600


class BrokerMetrics(Collector):
    """Keeps the latest BrokerStats and turns it into metrics at scrape time."""

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._stats: BrokerStats | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._client = MqttClient(
            ConnectOptions(
                host=host,
                port=port,
                client_id=f"{EXPORTER_USER}-{secrets.token_hex(4)}",
                credentials=self._credentials,
                subscriptions=[(BROKER_STATS_TOPIC, 1)],
            ),
            on_message=self._on_message,
        )
        self._server: tuple[WSGIServer, threading.Thread] | None = None
        self._address = (host, port)
        self._subscribes = settings.can_mint_mqtt_tokens

    def _credentials(self) -> Credentials:
        signer = self._settings.mqtt_signer
        token = mint_mqtt_token(signer, EXPORTER_USER, TOKEN_TTL_SECONDS, service=True)
        return Credentials(EXPORTER_USER, token, expires_at=time.time() + TOKEN_TTL_SECONDS)

    def _on_message(self, message: Message) -> None:
        try:
            stats = BrokerStats.model_validate_json(message.payload)
        except ValidationError:
            log.warning("ignoring a malformed broker stats message")
            return
        with self._lock:
            self._stats = stats

    @property
    def stats(self) -> BrokerStats | None:
        with self._lock:
            return self._stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        counts = stats.connects if stats else ConnectCounts.model_validate({})
        connects = CounterMetricFamily(
            "plantnotify_mqtt_connects",
            "MQTT CONNECTs by outcome, as the broker plugin decided them (since broker start).",
            labels=["result"],
        )
        for result, value in counts.model_dump().items():
            connects.add_metric([result], float(value))
        yield connects
        yield GaugeMetricFamily(
            "plantnotify_mqtt_live_connections",
            "Live authenticated MQTT connections (users and services).",
            value=float(stats.live if stats else 0),
        )
        yield GaugeMetricFamily(
            "plantnotify_broker_up",
            "1 while the broker accepts this exporter's service connection, 0 otherwise.",
            value=1.0 if self._up() else 0.0,
        )

    def _up(self) -> bool:
        if self._subscribes:
            return self._client.is_connected
        try:
            probe_mqtt(*self._address, timeout=2.0)
        except ProbeFailed:
            return False
        return True

    def start(self, port: int, host: str) -> None:
        """Connect (the reconnect loop keeps trying) and serve /metrics on ``host:port``."""
        if self._subscribes:
            self._client.start()
        else:
            log.warning(
                "broker metrics: no MQTT signing key here (MQTT_JWT_PUBLIC_KEY_FILE only), so "
                "no CONNECT counters; plantnotify_broker_up probes the broker instead"
            )
        if port:
            self._server = start_http_server(port, addr=host, registry=self.registry)
            log.info("broker metrics on http://%s:%d/metrics", host, port)

    def stop(self) -> None:
        if self._subscribes:
            self._client.stop()
        if self._server is not None:
            httpd, thread = self._server
            httpd.shutdown()
            httpd.server_close()
            thread.join(2.0)
            self._server = None
