"""Both listeners honour MQTT_BIND_HOST (issue 14, finding 2: the WebSocket listener of
Mosquitto 2.0.11 listened on every interface although the configuration said 127.0.0.1, and a
service token over it received every user's retained events). Checked on the listening
sockets themselves, as `ss` shows them."""

from __future__ import annotations

import subprocess

from plantnotify.broker.config import socket_domain_line
from tests.support.broker import BrokerHandle


def _listening(port: int) -> set[str]:
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


def test_both_listeners_bind_only_the_configured_address(broker: BrokerHandle) -> None:
    assert broker.settings.mqtt_bind_host == "127.0.0.1"
    assert _listening(broker.port) == {f"127.0.0.1:{broker.port}"}
    assert _listening(broker.ws_port) == {f"127.0.0.1:{broker.ws_port}"}


def test_socket_domain_follows_the_address_family() -> None:
    assert socket_domain_line("127.0.0.1") == "socket_domain ipv4"
    assert socket_domain_line("0.0.0.0") == "socket_domain ipv4"
    assert socket_domain_line("::1") == "socket_domain ipv6"
    assert socket_domain_line("[::1]") == "socket_domain ipv6"
    assert socket_domain_line("mosquitto").startswith("#")
