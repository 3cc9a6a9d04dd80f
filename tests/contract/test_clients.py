"""The reference command-line clients work on every engine: the ``mosquitto_sub`` line that
``plantnotify token --mosquitto-sub`` prints connects with the engine's protocol level and
receives the user's events, and nothing else."""

from __future__ import annotations

import secrets
import shlex
import subprocess
import time

from plantnotify.contracts.topics import analysis_topic
from plantnotify.tokencli import mosquitto_sub_command
from tests.contract.engines import EngineUnderTest


def test_mosquitto_sub_line_receives_the_users_events(engine: EngineUnderTest) -> None:
    user = f"cli{secrets.token_hex(3)}"
    line = mosquitto_sub_command(engine.settings, user, engine.token(user, 60), service=False)
    argv = shlex.split(line)
    expected = "mqttv311" if engine.settings.mqtt_protocol == 4 else "mqttv5"
    assert argv[argv.index("-V") + 1] == expected
    assert int(argv[argv.index("-p") + 1]) == engine.port(0)
    sub = subprocess.Popen(
        ["bash", "-c", line + " -W 4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    svc = engine.service("cli-pub", node=1)
    try:
        time.sleep(1.5)
        svc.publish(analysis_topic(user, "mine"), b'{"n":1}')
        svc.publish(analysis_topic(f"{user}x", "theirs"), b"{}")
        out, err = sub.communicate(timeout=15)
    finally:
        svc.close()
    lines = out.strip().splitlines()
    assert f"{analysis_topic(user, 'mine')} " + '{"n":1}' in lines, (out, err)
    assert all(x.startswith(f"users/{user}/") for x in lines), out
