"""The broker's CONNECT outcomes reach Prometheus: plugin counters -> BrokerStats -> /metrics."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantnotify.broker.metrics import BrokerMetrics
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from plantnotify.contracts.topics import BROKER_STATS_TOPIC
from tests.support.broker import BrokerFactory, BrokerHandle
from tests.support.mqtt import connect, refused
from tests.support.net import free_port, wait_for

ROOT = Path(__file__).resolve().parents[3]


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(plantnotify_\w+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


@pytest.fixture
def stats_broker(broker_factory: BrokerFactory) -> BrokerHandle:
    # Stats every second (default 5) and one connection per user, to provoke the limit.
    return broker_factory(plugin_options={"stats_interval": "1", "max_connections_per_user": "1"})


@pytest.fixture
def exporter(stats_broker: BrokerHandle) -> Iterator[tuple[BrokerMetrics, int]]:
    metrics = BrokerMetrics(stats_broker.settings, "127.0.0.1", stats_broker.port)
    port = free_port()
    metrics.start(port, "127.0.0.1")
    yield metrics, port
    metrics.stop()


def test_connect_outcomes_are_counted_by_result(
    stats_broker: BrokerHandle, exporter: tuple[BrokerMetrics, int]
) -> None:
    _, port = exporter
    wait_for(lambda: scrape(port)["plantnotify_broker_up"] == 1, what="exporter connected")
    b = stats_broker
    stranger = MqttSigner(
        key="not-the-broker-secret-" + "x" * 20, audience=b.settings.mqtt_audience
    )

    alice = connect(b.port, "alice", b.token("alice"), "alice-phone")
    try:
        assert refused(b.port, "alice", b.token("alice"), "alice-tablet")  # limit: 1 per user
        assert refused(b.port, "bob", mint_mqtt_token(stranger, "bob", 60), "bob")  # signature
        assert refused(b.port, "bob", _expired(b), "bob")  # exp in 1970
        assert refused(b.port, "carol", b.token("bob"), "carol")  # username is not the token's
    finally:
        alice.close()

    expected = {
        'plantnotify_mqtt_connects_total{result="limit"}': 1,
        'plantnotify_mqtt_connects_total{result="invalid_token"}': 1,
        'plantnotify_mqtt_connects_total{result="expired"}': 1,
        'plantnotify_mqtt_connects_total{result="identity"}': 1,
        'plantnotify_mqtt_connects_total{result="error"}': 0,
    }

    def counted() -> bool:
        samples = scrape(port)
        # alice, plus the exporter's own service connection
        return samples['plantnotify_mqtt_connects_total{result="accepted"}'] >= 2 and all(
            samples[k] == v for k, v in expected.items()
        )

    wait_for(counted, timeout=10, what=f"counters {expected} (last: {scrape(port)})")
    assert scrape(port)["plantnotify_mqtt_live_connections"] >= 1  # the exporter itself


def _expired(b: BrokerHandle) -> str:
    signer = b.settings.mqtt_signer
    return mint_mqtt_token(signer, "bob", 10, now=1_000_000)  # expired in 1970


def test_broker_up_falls_to_zero_when_the_broker_stops(
    stats_broker: BrokerHandle, exporter: tuple[BrokerMetrics, int]
) -> None:
    _, port = exporter
    wait_for(lambda: scrape(port)["plantnotify_broker_up"] == 1, what="exporter connected")
    stats_broker.stop()
    wait_for(lambda: scrape(port)["plantnotify_broker_up"] == 0, timeout=10, what="up == 0")


def test_plugin_and_python_name_the_same_stats_topic() -> None:
    source = (ROOT / "mosquitto" / "plugin" / "plantnotify_plugin.c").read_text()
    match = re.search(r'#define STATS_TOPIC "([^"]+)"', source)
    assert match and match.group(1) == BROKER_STATS_TOPIC
