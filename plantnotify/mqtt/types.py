"""Value types at the package boundary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming PUBLISH, as the rest of the project sees it."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    expiry: int | None = None  # MQTT 5 message expiry interval left, in seconds


@dataclass(frozen=True, slots=True)
class Credentials:
    """Username and password (a JWT) for one connection attempt.

    ``expires_at`` (unix seconds) lets the client reconnect with fresh credentials before the
    broker disconnects it for an expired token.
    """

    username: str
    password: str
    expires_at: float | None = None


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(slots=True)
class ConnectOptions:
    host: str
    port: int
    client_id: str
    credentials: Callable[[], Credentials]
    transport: Literal["tcp", "websockets"] = "tcp"
    ws_path: str = "/mqtt"
    protocol: Literal[4, 5] = 5
    clean_start: bool = True
    # MQTT 5 session expiry in seconds (0: the session ends with the connection).
    session_expiry: int = 0
    keepalive: int = 30
    reconnect_min_delay: float = 0.2
    reconnect_max_delay: float = 10.0
    # Reconnect this many seconds before ``Credentials.expires_at``.
    refresh_margin: float = 30.0
    subscriptions: list[tuple[str, int]] = field(default_factory=list)
    # Other nodes of a clustered broker, tried in turn when the current one does not answer.
    failover: list[tuple[str, int]] = field(default_factory=list)
    # Filters (among ``subscriptions``) whose retained messages the broker must not replay
    # when subscribing (MQTT 5 Retain Handling 2): for services that follow new publications
    # on wide filters and would otherwise receive every retained message on each (re)connect.
    # On MQTT 3.1.1 they are not subscribed again when the broker kept the session (only the
    # first subscription of a new session replays).
    no_retained_replay: frozenset[str] = frozenset()
