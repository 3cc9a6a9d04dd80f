"""Graceful shutdown: every long-running part, started as `plantnotify <part>` the way a
container runs it, exits 0 promptly on SIGTERM (what `docker compose stop` sends).

The parts run side by side against the test database, vhost and broker, so the test costs
one start-up and one shutdown, not one per part.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.procs import Part, http_ok, scrape, service_env, start_all, stop_all
from tests.support.broker import BrokerHandle, build_plugin
from tests.support.net import free_port, port_open

# Longer than any part needs; what matters is exit 0 well inside Docker's stop timeout (10 s
# by default; docker-compose.yml gives the worker 45 s for its 30 s grace).
STOP_WITHIN_SECONDS = 10.0


@pytest.fixture
def parts(broker: BrokerHandle, tmp_path: Path) -> Iterator[dict[str, Part]]:
    s = broker.settings
    api_port, bridge_metrics = free_port(), free_port()
    mqtt_port, mqtt_ws_port, broker_metrics = free_port(), free_port(), free_port()
    made = {
        "api": Part(
            "api",
            ["api"],
            service_env(s, API_PORT=str(api_port)),
            lambda: http_ok(f"http://127.0.0.1:{api_port}/readyz"),
            tmp_path / "api.log",
        ),
        "bridge": Part(
            "bridge",
            ["bridge"],
            service_env(s, METRICS_PORT_BRIDGE=str(bridge_metrics)),
            lambda: port_open(bridge_metrics),
            tmp_path / "bridge.log",
        ),
        "broker": Part(
            "broker",
            ["broker"],
            # Its own broker: stopping the session broker would break other tests.
            service_env(
                s,
                MQTT_PORT=str(mqtt_port),
                MQTT_WS_PORT=str(mqtt_ws_port),
                MQTT_DATA_DIR=str(tmp_path / "mosquitto"),
                MQTT_PLUGIN_PATH=str(build_plugin()),
                METRICS_PORT_BROKER=str(broker_metrics),
            ),
            lambda: (
                http_ok(f"http://127.0.0.1:{broker_metrics}/metrics")
                and "plantnotify_broker_up 1.0" in scrape(broker_metrics)
            ),
            tmp_path / "broker.log",
        ),
    }
    yield made
    for part in made.values():
        part.kill()


def test_every_part_exits_0_promptly_on_sigterm(parts: dict[str, Part]) -> None:
    start_all(parts.values())
    stop_all(parts.values(), within=STOP_WITHIN_SECONDS)
    for part in parts.values():
        assert part.proc is not None
        assert part.proc.returncode == 0, (
            f"{part.name} exited {part.proc.returncode}:\n{part.log()}"
        )
        assert "Traceback" not in part.log(), f"{part.name}:\n{part.log()}"
    # JSON logs down to the last line, as a log shipper needs them (the broker part also
    # relays Mosquitto's own text output).
    for name in ("api", "bridge"):
        for line in parts[name].log().splitlines():
            assert json.loads(line)["level"], line
