"""Container health checks: ``python -m plantnotify.healthcheck URL``.

Exit status 0 when the target answers, 1 otherwise, with one line saying why (Docker keeps the
output of the last checks: ``docker inspect --format '{{json .State.Health}}' CONTAINER``).

- ``http://host:port/path``: healthy on a 2xx answer (``/readyz``, a ``/metrics`` endpoint).
- ``mqtt://host:port``: healthy when the broker accepts a CONNECT with a service token minted
  from this container's settings, so the check covers the plugin and the signing key, not only
  an open port. Where no token can be minted (only the public key is given: the broker's own
  container with ES256/RS256), healthy when the broker answers a CONNECT at all
  (``plantnotify.broker.probe``).
- ``tcp://host:port``: healthy when the port accepts a connection.
- ``file:///path``: healthy when the file was touched in the last 30 s (a heartbeat: the auth
  callout touches one while it is connected and answering).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from urllib.parse import urlsplit

HEALTHCHECK_USER = "healthcheck"


class Unhealthy(Exception):
    """The target did not answer as a healthy one does; the message says what happened."""


def check_http(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http only)
            return f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        raise Unhealthy(f"{url}: HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise Unhealthy(f"{url}: {exc}") from None


def check_tcp(host: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return f"tcp://{host}:{port}: accepting connections"
    except OSError as exc:
        raise Unhealthy(f"tcp://{host}:{port}: {exc}") from None


def check_mqtt(host: str, port: int, timeout: float) -> str:
    from plantnotify.contracts.claims import mint_mqtt_token
    from plantnotify.mqtt import MqttClient, MqttConnectError, MqttError
    from plantnotify.mqtt.types import ConnectOptions, Credentials
    from plantnotify.settings import load_settings

    settings = load_settings()
    if not settings.can_mint_mqtt_tokens:
        from plantnotify.broker.probe import ProbeFailed, probe_mqtt

        try:
            probe_mqtt(host, port, timeout)
        except ProbeFailed as exc:
            raise Unhealthy(f"mqtt://{host}:{port}: {exc}") from None
        return f"mqtt://{host}:{port}: answers MQTT (no signing key here to CONNECT with)"
    token = mint_mqtt_token(settings.mqtt_signer, HEALTHCHECK_USER, 60, service=True)
    options = ConnectOptions(
        host=host,
        port=port,
        client_id=f"{HEALTHCHECK_USER}-{secrets.token_hex(4)}",
        credentials=lambda: Credentials(HEALTHCHECK_USER, token),
        reconnect_min_delay=timeout,
        protocol=settings.mqtt_protocol,  # 3.1.1 on the NATS engine
    )
    client = MqttClient(options).start()
    deadline = time.monotonic() + timeout
    try:
        # A refused CONNECT is final for a health check: report it at once, do not retry.
        while not client.is_connected:
            if isinstance(client.last_error, MqttConnectError):
                raise client.last_error
            if time.monotonic() > deadline:
                client.wait_connected(0)
            time.sleep(0.02)
    except MqttError as exc:
        raise Unhealthy(f"mqtt://{host}:{port}: {exc}") from None
    finally:
        client.stop(timeout=2.0)
    return f"mqtt://{host}:{port}: CONNECT accepted"


HEARTBEAT_MAX_AGE = 30.0


def check_file(path: str) -> str:
    try:
        age = time.time() - os.path.getmtime(path)
    except OSError as exc:
        raise Unhealthy(f"file://{path}: {exc}") from None
    if age > HEARTBEAT_MAX_AGE:
        raise Unhealthy(f"file://{path}: last heartbeat {age:.0f} s ago")
    return f"file://{path}: heartbeat {age:.0f} s ago"


def check(url: str, timeout: float = 5.0) -> str:
    """A one-line description of the healthy target; raises Unhealthy otherwise."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return check_http(url, timeout)
    if parts.scheme == "file" and parts.path:
        return check_file(parts.path)
    if parts.scheme in ("tcp", "mqtt") and parts.hostname and parts.port:
        if parts.scheme == "tcp":
            return check_tcp(parts.hostname, parts.port, timeout)
        return check_mqtt(parts.hostname, parts.port, timeout)
    raise Unhealthy(
        f"cannot check {url!r}: use http://, mqtt://host:port, tcp://host:port or file:///path"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m plantnotify.healthcheck URL", file=sys.stderr)
        return 2
    try:
        print(check(args[0]))
    except Unhealthy as exc:
        print(f"unhealthy: {exc}")
        return 1
    except Exception as exc:  # a health check reports, it never crashes with a traceback
        print(f"unhealthy: {args[0]}: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
