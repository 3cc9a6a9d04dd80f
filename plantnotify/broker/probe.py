"""Whether a broker answers MQTT, asked without credentials.

For a part that holds no MQTT signing key (the broker's own container in production, which has
only the public key): it sends a CONNECT with a protocol level no broker speaks, and a broker
that parses MQTT answers CONNACK "unacceptable protocol version" before any authentication.
So the probe neither needs a token nor counts as a refused CONNECT in the plugin's statistics.
"""

from __future__ import annotations

import socket

# CONNECT: protocol name "MQTT", level 0 (unknown), clean session, keep-alive 10 s, client id
# "pn-probe". Mosquitto answers 0x20 0x02 0x00 0x01 and closes.
_CONNECT = b"\x10\x14\x00\x04MQTT\x00\x02\x00\x0a\x00\x08pn-probe"
_CONNACK_UNACCEPTABLE_VERSION = b"\x20\x02\x00\x01"


class ProbeFailed(Exception):
    """The broker did not answer as an MQTT broker does; the message says what happened."""


def probe_mqtt(host: str, port: int, timeout: float) -> None:
    """Returns when ``host:port`` answers an MQTT CONNECT; raises ProbeFailed otherwise."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_CONNECT)
            answer = b""
            while len(answer) < len(_CONNACK_UNACCEPTABLE_VERSION):
                chunk = sock.recv(16)
                if not chunk:
                    break
                answer += chunk
    except OSError as exc:
        raise ProbeFailed(str(exc)) from None
    if answer[:4] != _CONNACK_UNACCEPTABLE_VERSION:
        raise ProbeFailed(f"not an MQTT answer: {answer[:8].hex() or 'connection closed'}")
