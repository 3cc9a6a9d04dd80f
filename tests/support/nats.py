"""The NATS engine for tests: a local 3-node cluster with an auth callout beside each node.

Fixtures:
    nats_cluster   session-scoped NatsHandle (one cluster per test session; do not kill
                   nodes of it: tests that do start their own with ``start_nats_cluster``)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plantnotify.broker.engines.nats.cluster import NatsCluster, local_layout
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.settings import Settings
from tests.support.broker import settings_with


class NatsHandle:
    def __init__(self, cluster: NatsCluster) -> None:
        self.cluster = cluster

    @property
    def settings(self) -> Settings:
        return self.cluster.settings

    @property
    def ports(self) -> list[int]:
        return self.cluster.mqtt_ports

    @property
    def ws_ports(self) -> list[int]:
        return self.cluster.ws_ports

    def token(self, user_id: str, ttl: int = 300, service: bool = False) -> str:
        return mint_mqtt_token(self.settings.mqtt_signer, user_id, ttl, service=service)


def start_nats_cluster(base: Settings, data_dir: Path, **overrides: Any) -> NatsHandle:
    """A started cluster whose ``settings`` point the services at its first node."""
    layout = local_layout(data_dir)
    first = layout.nodes[0]
    settings = settings_with(
        base,
        broker_engine="nats",
        nats_data_dir=data_dir,
        mqtt_host="127.0.0.1",
        mqtt_port=first.mqtt_port,
        mqtt_ws_port=first.ws_port,
        nats_urls=",".join(n.client_url for n in layout.nodes),
        mqtt_failover_hosts=",".join(f"{n.host}:{n.mqtt_port}" for n in layout.nodes[1:]),
        **overrides,
    )
    cluster = NatsCluster(settings, layout)
    handle = NatsHandle(cluster)
    try:
        cluster.start()  # returns once every node accepts an MQTT service client
    except BaseException:
        cluster.stop()
        raise
    return handle


@pytest.fixture(scope="session")
def nats_cluster(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NatsHandle]:
    handle = start_nats_cluster(
        base_settings, tmp_path_factory.mktemp("nats"), mqtt_leeway_seconds=1
    )
    yield handle
    handle.cluster.stop()
