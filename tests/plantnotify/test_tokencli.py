"""``plantnotify token``: bare tokens and a complete, working ``mosquitto_sub`` line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import jwt
import pytest

from plantnotify.cli import main
from plantnotify.contracts.claims import DEFAULT_MQTT_AUDIENCE
from plantnotify.contracts.topics import analysis_topic
from tests.support.broker import BrokerHandle
from tests.support.mqtt import connect


def _env(broker: BrokerHandle) -> dict[str, str]:
    return {
        **os.environ,
        "MQTT_PORT": str(broker.port),
        "JWT_SECRET": broker.settings.jwt_secret,
        "MQTT_DATA_DIR": str(broker.data_dir),
    }


def _run(broker: BrokerHandle, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user pastes it (a fresh process)."""
    return subprocess.run(
        [sys.executable, "-m", "plantnotify.cli", "token", *args],
        env=_env(broker),
        capture_output=True,
        text=True,
        check=False,
    )


def _call(
    broker: BrokerHandle,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, str, str]:
    """The same command in-process (much faster than a new interpreter per case)."""
    for key, value in _env(broker).items():
        if key.startswith(("MQTT_", "JWT_")):
            monkeypatch.setenv(key, value)
    rc = main(["token", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_prints_a_token_for_the_user(
    broker: BrokerHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _call(broker, monkeypatch, capsys, "42", "--ttl", "120")
    assert rc == 0, err
    claims = jwt.decode(
        out.strip(),
        broker.settings.jwt_secret,
        algorithms=["HS256"],
        audience=DEFAULT_MQTT_AUDIENCE,
    )
    assert claims["sub"] == "42"
    assert claims["exp"] - claims["iat"] == 120
    assert "role" not in claims
    service = _run(broker, "worker", "--service")
    assert (
        jwt.decode(
            service.stdout.strip(),
            broker.settings.jwt_secret,
            algorithms=["HS256"],
            audience=DEFAULT_MQTT_AUDIENCE,
        )["role"]
        == "service"
    )


def test_refuses_an_invalid_user_id_and_ttl(
    broker: BrokerHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (("42/x",), ("+",), ("42", "--ttl", "0")):
        rc, out, err = _call(broker, monkeypatch, capsys, *args)
        assert rc == 2
        assert out == ""
        assert "plantnotify token:" in err


def test_service_line_covers_every_user_and_the_service_topics(
    broker: BrokerHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = shlex.split(
        _call(broker, monkeypatch, capsys, "worker", "--service", "--mosquitto-sub")[1]
    )
    topics = [argv[i + 1] for i, a in enumerate(argv) if a == "-t"]
    assert topics == ["users/+/#", "plantnotify/#"]


def test_mosquitto_sub_line_receives_the_users_events_and_nothing_else(
    broker: BrokerHandle,
) -> None:
    line = _run(broker, "42", "--ttl", "60", "--mosquitto-sub").stdout.strip()
    argv = shlex.split(line)
    assert argv[0] == "mosquitto_sub"
    assert argv[argv.index("-t") + 1] == "users/42/#"
    assert argv[argv.index("-i") + 1].startswith("42-sub-")
    svc = connect(broker.port, "svc-cli", broker.token("svc-cli", service=True), "svc-cli")
    # -W: exit after 3 s; -C 2 would hide extra messages, so count them ourselves.
    sub = subprocess.Popen(
        ["bash", "-c", line + " -W 3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        svc.publish(analysis_topic("42", "cli-0"), b"{}", retain=True)  # may land before SUBSCRIBE
        time.sleep(1.0)
        svc.publish(analysis_topic("42", "cli-1"), json.dumps({"n": 1}).encode())
        svc.publish(analysis_topic("43", "cli-2"), b"{}")
        svc.publish("plantnotify/sessions/43", b"{}")
        out, err = sub.communicate(timeout=10)
    finally:
        svc.close()
    lines = out.strip().splitlines()
    assert f"{analysis_topic('42', 'cli-1')} " + '{"n": 1}' in lines, (out, err)
    assert all(line.startswith("users/42/") for line in lines), out
