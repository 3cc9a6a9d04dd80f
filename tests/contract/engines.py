"""The broker contract suite's view of an engine: where to connect, what it speaks, tokens.

Every test of ``tests/contract`` takes the ``engine`` fixture, parametrized over all engines,
and uses only this surface: the suite is black-box MQTT (TCP and WebSocket), so a new engine
needs an ``EngineUnderTest`` here and nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.settings import Settings
from tests.support.mqtt import V5, V311, TestClient, connect


@dataclass
class EngineUnderTest:
    name: str
    settings: Settings
    tcp_ports: list[int]  # one per node
    ws_ports: list[int]
    protocols: tuple[int, ...]  # MQTT protocol levels it accepts (4: 3.1.1, 5)

    @property
    def nodes(self) -> int:
        return len(self.tcp_ports)

    @property
    def protocol(self) -> int:
        """The level every engine speaks (3.1.1)."""
        return V311

    @property
    def max_connections(self) -> int:
        return self.settings.mqtt_max_connections_per_user

    @property
    def leeway(self) -> int:
        return self.settings.mqtt_leeway_seconds

    def port(self, node: int = 0, transport: str = "tcp") -> int:
        ports = self.ws_ports if transport == "websockets" else self.tcp_ports
        return ports[node % len(ports)]

    def token(
        self,
        user: str,
        ttl: int = 300,
        service: bool = False,
        *,
        session_id: str | None = None,
        issued_at: int | None = None,
    ) -> str:
        return mint_mqtt_token(
            self.settings.mqtt_signer,
            user,
            ttl,
            service=service,
            session_id=session_id,
            now=issued_at,
        )

    def connect(
        self,
        user: str,
        client_id: str | None = None,
        *,
        node: int = 0,
        transport: str = "tcp",
        protocol: int | None = None,
        token: str | None = None,
        clean: bool = True,
        session_expiry: int | None = None,
        ttl: int = 300,
    ) -> TestClient:
        proto = protocol or self.protocol
        if proto == V5 and not clean and session_expiry is None:
            session_expiry = 300
        return connect(
            self.port(node, transport),
            user,
            token if token is not None else self.token(user, ttl),
            client_id or f"{user}-{int(time.monotonic() * 1e6) % 10**9}",
            protocol=proto,
            transport=transport,
            clean=clean,
            session_expiry=session_expiry,
        )

    def service(self, name: str, *, node: int = 0) -> TestClient:
        user = f"svc-{name}"
        return connect(
            self.port(node),
            user,
            self.token(user, service=True),
            f"{user}-{int(time.monotonic() * 1e6) % 10**9}",
            protocol=self.protocol,
        )
