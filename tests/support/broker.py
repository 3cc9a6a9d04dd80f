"""Our Mosquitto with the built plugin, on free ports, for every test that needs MQTT.

Fixtures:
    broker          session-scoped BrokerHandle (do not restart or kill it)
    settings        function-scoped: ``broker.settings`` (what api/worker/bridge tests use)
    broker_factory  function-scoped: ``broker_factory(**options) -> BrokerHandle`` for tests
                    that restart, kill or reconfigure a broker; all stopped at test end.

The plugin is (re)built with ``make -C mosquitto/plugin`` once per session when missing or
older than its sources; a build failure fails the test with the compiler's message.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from plantnotify.broker.config import PLUGIN_BUILD_PATH, BrokerLayout
from plantnotify.broker.process import BrokerProcess
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.net import free_port
from plantnotify.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = ROOT / "mosquitto" / "plugin"
_build_lock = threading.Lock()
_built: set[str] = set()


def build_plugin(target: str = "all") -> Path:
    """Runs ``make -C mosquitto/plugin <target>`` once per session; fails the test clearly."""
    with _build_lock:
        if target not in _built:
            result = subprocess.run(
                ["make", "-s", "-C", str(PLUGIN_DIR), target],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                pytest.fail(
                    f"could not build the Mosquitto plugin (make -C mosquitto/plugin {target}):\n"
                    f"{result.stdout}\n{result.stderr}\n"
                    "Install the build dependencies with scripts/install-system.sh "
                    "(mosquitto-dev, libjwt-dev, libjansson-dev, libssl-dev, clang).",
                    pytrace=False,
                )
            _built.add(target)
    return PLUGIN_BUILD_PATH


def settings_with(base: Settings, **overrides: Any) -> Settings:
    """A fully validated copy of ``base`` with some fields changed."""
    return Settings(**{**base.model_dump(), **overrides})


class BrokerHandle:
    """A running broker: ports, settings pointing at it, restart/stop, log, tokens."""

    def __init__(self, process: BrokerProcess) -> None:
        self.process = process

    @property
    def settings(self) -> Settings:
        return self.process.settings

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def ws_port(self) -> int:
        return self.process.ws_port

    @property
    def data_dir(self) -> Path:
        return self.process.layout.data_dir

    def start(self) -> None:
        self.process.start()

    def restart(self, kill: bool = False) -> None:
        """SIGKILL (nothing saved) or SIGTERM (database saved), then start on the same ports."""
        if kill:
            self.process.kill()
        else:
            self.process.stop()
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def running(self) -> bool:
        return self.process.running()

    def log_text(self) -> str:
        return self.process.log_text()

    def token(self, user_id: str, ttl: int = 300, service: bool = False) -> str:
        return mint_mqtt_token(self.settings.mqtt_signer, user_id, ttl, service=service)


def make_broker(
    base: Settings,
    data_dir: Path,
    *,
    plugin_options: Mapping[str, str | None] | None = None,
    plugin_path: Path | None = None,
    wrapper: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    start: bool = True,
    **settings_overrides: Any,
) -> BrokerHandle:
    """A broker on fresh free ports with its own data dir; started unless ``start=False``."""
    port, ws_port = free_port(), free_port()
    while ws_port == port:
        ws_port = free_port()
    settings = settings_with(
        base,
        mqtt_host="127.0.0.1",
        mqtt_port=port,
        mqtt_ws_port=ws_port,
        mqtt_data_dir=data_dir,
        **settings_overrides,
    )
    layout = BrokerLayout(
        port=port,
        ws_port=ws_port,
        data_dir=data_dir,
        plugin_path=plugin_path or build_plugin(),
        plugin_options=dict(plugin_options or {}),
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    process = BrokerProcess(
        settings, layout, log_path=data_dir / "mosquitto.log", wrapper=wrapper, env=env
    )
    handle = BrokerHandle(process)
    if start:
        handle.start()
    return handle


@pytest.fixture(scope="session")
def broker(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerHandle]:
    handle = make_broker(base_settings, tmp_path_factory.mktemp("mosquitto"))
    yield handle
    handle.stop()


@pytest.fixture
def settings(broker: BrokerHandle) -> Settings:
    return broker.settings


BrokerFactory = Callable[..., BrokerHandle]


@pytest.fixture
def broker_factory(base_settings: Settings, tmp_path: Path) -> Iterator[BrokerFactory]:
    handles: list[BrokerHandle] = []

    def factory(**kwargs: Any) -> BrokerHandle:
        kwargs.setdefault("data_dir", tmp_path / f"mosquitto-{len(handles)}")
        base = kwargs.pop("base", base_settings)
        handle = make_broker(base, **kwargs)
        handles.append(handle)
        return handle

    yield factory
    for handle in handles:
        handle.stop()
