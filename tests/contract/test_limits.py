"""Per-user connection limit (cluster-wide on NATS) and the expiry kick (contract §2)."""

from __future__ import annotations

import secrets
import time

from tests.contract.engines import EngineUnderTest
from tests.support.mqtt import ConnectRefused, TestClient


def test_one_connection_more_than_the_limit_is_refused(engine: EngineUnderTest) -> None:
    user = f"lim{secrets.token_hex(3)}"
    limit = engine.max_connections
    clients: list[TestClient] = []
    try:
        for i in range(limit):
            clients.append(engine.connect(user, f"{user}-{i}", node=i))
        time.sleep(0.3)  # presence reaches every callout (NATS); no-op on one node
        for node in range(engine.nodes):
            try:
                extra = engine.connect(user, f"{user}-x{node}", node=node)
            except ConnectRefused:
                continue
            extra.close()
            raise AssertionError(f"connection {limit + 1} accepted on node {node}")
        # a take-over of a live client id is not one more connection
        clients.append(engine.connect(user, f"{user}-0", node=1))
        assert clients[0].disconnected.wait(5)
        # after one closes, a new one is accepted within seconds
        clients[1].close()
        deadline = time.monotonic() + 5
        while True:
            try:
                clients.append(engine.connect(user, f"{user}-again", node=2))
                break
            except ConnectRefused:
                assert time.monotonic() < deadline, "slot not freed within 5 s"
                time.sleep(0.2)
        # other users are not affected
        engine.connect(f"{user}b", node=0).close()
    finally:
        for c in clients:
            c.close()


def test_a_connection_is_kicked_when_its_token_expires(engine: EngineUnderTest) -> None:
    user = f"exp{secrets.token_hex(3)}"
    ttl = 2
    c = engine.connect(user, node=1, ttl=ttl)
    exp = int(time.time()) + ttl
    assert c.disconnected.wait(ttl + engine.leeway + 4), "expired connection still open"
    late = time.time() - exp
    assert late <= engine.leeway + 2.5, f"kicked {late:.1f}s after exp"
