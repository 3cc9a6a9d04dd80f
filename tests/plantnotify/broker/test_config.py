"""Broker configuration rendering and port choice (plantnotify/broker/config.py, process.py)."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from plantnotify.broker.config import BrokerConfigError, BrokerLayout, render_config, write_config
from plantnotify.broker.process import BrokerError, choose_ports
from plantnotify.net import free_port
from plantnotify.settings import Settings
from tests.support.broker import settings_with


def test_config_keeps_the_secret_out_and_sets_what_the_plugin_needs(
    base_settings: Settings, tmp_path: Path
) -> None:
    layout = BrokerLayout(
        port=free_port(), ws_port=free_port(), data_dir=tmp_path / "d", plugin_path=Path("/x.so")
    )
    path = write_config(base_settings, layout)
    text = path.read_text()
    assert base_settings.jwt_secret not in text
    assert layout.secret_path.read_text() == base_settings.jwt_secret
    for p in (path, layout.secret_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    lines = set(text.splitlines())
    for required in (
        "per_listener_settings false",
        "allow_anonymous false",
        "persistence true",
        "autosave_on_changes false",
        "check_retain_source false",
        f"listener {layout.port} 127.0.0.1",
        f"listener {layout.ws_port} 127.0.0.1",
        "protocol websockets",
        f"plugin_opt_jwt_secret_file {layout.secret_path}",
        f"plugin_opt_max_connections_per_user {base_settings.mqtt_max_connections_per_user}",
    ):
        assert required in lines, required
    assert "$" not in text.replace("$SYS", ""), "unfilled template placeholder"


def test_config_refuses_line_breaks_in_values(base_settings: Settings, tmp_path: Path) -> None:
    s = settings_with(base_settings, mqtt_audience="aud\nallow_anonymous true")
    layout = BrokerLayout(port=1, ws_port=2, data_dir=tmp_path, plugin_path=Path("/x.so"))
    with pytest.raises(BrokerConfigError, match="line break"):
        render_config(s, layout)


def test_a_taken_default_port_is_replaced_but_an_explicit_one_fails(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        defaults = Settings(environment="test", mqtt_data_dir=tmp_path)
        # Pretend the default is the taken port, as with a system Mosquitto on 1883.
        defaults.__dict__["mqtt_port"] = port
        choice = choose_ports(defaults)
        assert choice.port != port
        assert any(f"MQTT_PORT {port} is taken" in n for n in choice.notes)
        explicit = Settings(environment="test", mqtt_port=port, mqtt_data_dir=tmp_path)
        with pytest.raises(BrokerError, match=f"MQTT_PORT={port} is already in use"):
            choose_ports(explicit)
