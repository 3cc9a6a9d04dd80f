"""The ``engine`` fixture: every contract test runs once per engine.

Mosquitto: one node with the plugin (MQTT 3.1.1 and 5). NATS: the session's 3-node cluster
(MQTT 3.1.1), tests spread their clients over the nodes. Both with a 1 s clock leeway and, for
Mosquitto, a 1 s expiry check, so the expiry-kick test is quick.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plantnotify.broker.engines import ENGINES
from plantnotify.settings import Settings
from tests.contract.engines import EngineUnderTest
from tests.support.broker import make_broker
from tests.support.mqtt import V5, V311
from tests.support.nats import NatsHandle


@pytest.fixture(scope="session")
def contract_mosquitto(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineUnderTest]:
    handle = make_broker(
        base_settings,
        tmp_path_factory.mktemp("contract-mosquitto"),
        mqtt_leeway_seconds=1,
        mqtt_expiry_check_seconds=1,
    )
    yield EngineUnderTest(
        "mosquitto", handle.settings, [handle.port], [handle.ws_port], PROTOCOLS["mosquitto"]
    )
    handle.stop()


@pytest.fixture(scope="session")
def contract_nats(nats_cluster: NatsHandle) -> EngineUnderTest:
    return EngineUnderTest(
        "nats", nats_cluster.settings, nats_cluster.ports, nats_cluster.ws_ports, PROTOCOLS["nats"]
    )


# MQTT protocol levels each engine accepts (NATS refuses MQTT 5; test_auth checks that).
PROTOCOLS = {"mosquitto": (V311, V5), "nats": (V311,)}
PROTOCOL_IDS = {V311: "mqtt311", V5: "mqtt5"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``engine`` runs every engine; with ``protocol`` too, every level that engine speaks."""
    if "engine" not in metafunc.fixturenames:
        return
    if "protocol" in metafunc.fixturenames:
        combos = [(e, p) for e in ENGINES for p in PROTOCOLS[e]]
        metafunc.parametrize(
            ("engine", "protocol"),
            combos,
            indirect=["engine"],
            ids=[f"{e}-{PROTOCOL_IDS[p]}" for e, p in combos],
        )
    else:
        metafunc.parametrize("engine", ENGINES, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> EngineUnderTest:
    return request.getfixturevalue(f"contract_{request.param}")  # type: ignore[no-any-return]
