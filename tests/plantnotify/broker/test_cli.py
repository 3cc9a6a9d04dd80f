"""``plantnotify broker`` in the foreground: serves, picks free ports, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantnotify.net import free_port, port_free
from plantnotify.settings import Settings
from tests.support.broker import build_plugin
from tests.support.mqtt import raw_connect
from tests.support.net import wait_for


def _env(base_settings: Settings, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTT_")}
    env.update(
        ENVIRONMENT="test",
        JWT_SECRET=base_settings.jwt_secret,
        MQTT_DATA_DIR=str(data_dir),
        METRICS_PORT_BROKER="0",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "plantnotify.cli", *args]


@pytest.fixture
def run_broker(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    build_plugin()
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(15)


def _start(
    procs: list[subprocess.Popen[str]], env: dict[str, str], log: Path
) -> subprocess.Popen[str]:
    out = log.open("w")
    p = subprocess.Popen(_cli("broker"), env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    procs.append(p)
    return p


def test_runs_in_the_foreground_and_stops_cleanly_on_sigterm(
    base_settings: Settings, tmp_path: Path, run_broker: list[subprocess.Popen[str]]
) -> None:
    port, ws_port = free_port(), free_port()
    data = tmp_path / "data"
    log = tmp_path / "broker.log"
    env = _env(base_settings, data, MQTT_PORT=str(port), MQTT_WS_PORT=str(ws_port))
    proc = _start(run_broker, env, log)
    wait_for(lambda: "mosquitto running" in log.read_text(), timeout=30, what="broker start")
    token = subprocess.run(
        _cli("token", "42", "--ttl", "60"), env=env, capture_output=True, text=True, check=True
    )
    code, raw = raw_connect(port, "42", "42", token.stdout.strip())
    raw.close()
    assert code == 0
    assert json.loads((data / "broker.json").read_text())["port"] == port
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    text = log.read_text()
    assert "mosquitto stopped" in text
    assert "Saving in-memory database" in text  # SIGTERM lets Mosquitto save
    assert (data / "mosquitto.db").exists()
    assert not (data / "broker.json").exists()
    assert base_settings.jwt_secret not in text


def test_an_explicit_port_that_is_taken_fails_with_a_clear_message(
    base_settings: Settings, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(base_settings, tmp_path, MQTT_PORT=str(port), MQTT_WS_PORT=str(free_port()))
        result = subprocess.run(_cli("broker"), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"MQTT_PORT={port} is already in use by another program" in result.stderr


def test_a_taken_default_port_is_replaced_and_the_token_cli_follows(
    base_settings: Settings, tmp_path: Path, run_broker: list[subprocess.Popen[str]]
) -> None:
    default = Settings.model_fields["mqtt_port"].default
    blocker = None
    if port_free(default):  # make sure the default is taken (it may already be)
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", default))
        blocker.listen()
    try:
        data = tmp_path / "data"
        log = tmp_path / "broker.log"
        env = _env(base_settings, data, MQTT_WS_PORT=str(free_port()))
        _start(run_broker, env, log)
        wait_for(lambda: "mosquitto running" in log.read_text(), timeout=30, what="broker start")
        assert f"MQTT_PORT {default} is taken by another program; using" in log.read_text()
        port = json.loads((data / "broker.json").read_text())["port"]
        assert port != default
        line = subprocess.run(
            _cli("token", "42", "--mosquitto-sub"),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f" -p {port} " in line
    finally:
        if blocker:
            blocker.close()
