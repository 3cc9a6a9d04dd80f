"""Graceful shutdown: every long-running part, started as `plantnotify <part>` the way a
container runs it, exits 0 promptly on SIGTERM (what `docker compose stop` sends).

The parts run side by side against the test database, vhost and broker, so the test costs
one start-up and one shutdown, not four.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from plantnotify.settings import Settings
from tests.support.broker import BrokerHandle, build_plugin
from tests.support.net import free_port, port_open, wait_for

# Longer than any part needs; what matters is exit 0 well inside Docker's stop timeout (10 s
# by default; docker-compose.yml gives the worker 45 s for its 30 s grace).
STOP_WITHIN_SECONDS = 10.0


@dataclass
class Part:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    exit_seconds: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "plantnotify.cli", *self.argv],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (http)
            return bool(response.status == 200)
    except OSError:
        return False


def service_env(settings: Settings, **changes: str) -> dict[str, str]:
    """The environment a container would get: every setting as a variable, JSON logs."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(
        ENVIRONMENT="test",
        LOG_FORMAT="json",
        DATABASE_URL=settings.database_url,
        RABBITMQ_URL=settings.rabbitmq_url,
        JWT_SECRET=settings.jwt_secret,
        MQTT_HOST="127.0.0.1",
        MQTT_PORT=str(settings.mqtt_port),
        MQTT_WS_PORT=str(settings.mqtt_ws_port),
    )
    env.update(changes)
    return env


@pytest.fixture
def parts(broker: BrokerHandle, tmp_path: Path) -> Iterator[dict[str, Part]]:
    s = broker.settings
    api_port, bridge_metrics = free_port(), free_port()
    mqtt_port, mqtt_ws_port, broker_metrics = free_port(), free_port(), free_port()
    plugin = build_plugin()
    made = {
        "api": Part(
            "api",
            ["api"],
            service_env(s, API_PORT=str(api_port)),
            lambda: _http_ok(f"http://127.0.0.1:{api_port}/readyz"),
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
                MQTT_PLUGIN_PATH=str(plugin),
                METRICS_PORT_BROKER=str(broker_metrics),
            ),
            lambda: (
                _http_ok(f"http://127.0.0.1:{broker_metrics}/metrics")
                and "plantnotify_broker_up 1.0" in _scrape(broker_metrics)
            ),
            tmp_path / "broker.log",
        ),
    }
    for part in made.values():
        part.start()
    yield made
    for part in made.values():
        if part.alive():
            assert part.proc is not None
            part.proc.kill()
            part.proc.wait(10)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
        return str(response.read().decode())


def test_every_part_exits_0_promptly_on_sigterm(parts: dict[str, Part]) -> None:
    for part in parts.values():
        wait_for(
            lambda part=part: part.ready() or not part.alive(),  # type: ignore[misc]
            timeout=60,
            interval=0.2,
            what=f"{part.name} ready",
        )
        assert part.alive(), f"{part.name} exited during start-up:\n{part.log()}"

    started = time.monotonic()
    for part in parts.values():
        assert part.proc is not None
        part.proc.send_signal(signal.SIGTERM)
    for part in parts.values():
        assert part.proc is not None
        try:
            part.proc.wait(STOP_WITHIN_SECONDS - (time.monotonic() - started))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{part.name} still running {STOP_WITHIN_SECONDS}s after SIGTERM")
        part.exit_seconds = time.monotonic() - started

    for part in parts.values():
        assert part.proc is not None
        assert part.proc.returncode == 0, (
            f"{part.name} exited {part.proc.returncode}:\n{part.log()}"
        )
        assert "Traceback" not in part.log(), f"{part.name}:\n{part.log()}"
    # JSON logs all the way down to the last line, as a log shipper needs them.
    for name in ("api", "bridge"):
        for line in parts[name].log().splitlines():
            if line.startswith("{"):
                assert json.loads(line)["level"], line
