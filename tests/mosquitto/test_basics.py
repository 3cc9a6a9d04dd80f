"""The session broker works end to end: a user gets their own events and nothing else."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

from plantnotify.contracts.events import BrokerBoot
from plantnotify.contracts.ids import new_client_id
from plantnotify.contracts.topics import BROKER_BOOT_TOPIC, analysis_topic, user_filter
from tests.support.broker import BrokerHandle
from tests.support.mqtt import connect


def test_user_receives_own_events_and_nothing_else(broker: BrokerHandle) -> None:
    svc = connect(broker.port, "svc-basics", broker.token("svc-basics", service=True), "svc-basics")
    alice = connect(broker.port, "alice1", broker.token("alice1"), new_client_id("alice1"))
    try:
        assert alice.subscribe(user_filter("alice1")) == [1]
        svc.publish(analysis_topic("alice1", "a1"), b'{"n":1}', retain=True)
        svc.publish(analysis_topic("bob1", "b1"), b'{"n":2}', retain=True)
        got = alice.drain(0.5)
        assert [(m.topic, m.payload) for m in got] == [(analysis_topic("alice1", "a1"), b'{"n":1}')]
    finally:
        alice.close()
        svc.close()


def test_retained_event_reaches_a_late_subscriber(broker: BrokerHandle) -> None:
    svc = connect(broker.port, "svc-basics", broker.token("svc-basics", service=True), "svc-basics")
    svc.publish(analysis_topic("carol1", "c1"), b'{"late":true}', retain=True)
    svc.close()
    carol = connect(broker.port, "carol1", broker.token("carol1"), "carol1")
    try:
        assert carol.subscribe(user_filter("carol1")) == [1]
        msg = carol.wait_message(3)
        assert (msg.topic, msg.payload, msg.retain) == (
            analysis_topic("carol1", "c1"),
            b'{"late":true}',
            True,
        )
    finally:
        carol.close()


def test_boot_event_is_retained_for_services(broker: BrokerHandle) -> None:
    svc = connect(broker.port, "svc-boot", broker.token("svc-boot", service=True), "svc-boot")
    try:
        assert svc.subscribe(BROKER_BOOT_TOPIC) == [1]
        boot = BrokerBoot.model_validate_json(svc.wait_message(3, BROKER_BOOT_TOPIC).payload)
        assert len(boot.boot_id) == 32
        assert boot.started_at > 0
    finally:
        svc.close()


def test_token_cli_prints_a_working_mosquitto_sub_line(broker: BrokerHandle) -> None:
    env = {
        **os.environ,
        "MQTT_PORT": str(broker.port),
        "JWT_SECRET": broker.settings.jwt_secret,
        "MQTT_DATA_DIR": str(broker.data_dir),
    }
    line = subprocess.run(
        [sys.executable, "-m", "plantnotify.cli", "token", "42", "--ttl", "60", "--mosquitto-sub"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
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
        import time

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
