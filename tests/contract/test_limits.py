"""Per-user connection limit (cluster-wide on NATS) and the expiry kick (contract §2)."""

from __future__ import annotations

import secrets
import threading
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


def _race(engine: EngineUnderTest, user: str, prefix: str, racers: int) -> list[TestClient]:
    """``racers`` CONNECTs of ``user`` let go at once, spread over the nodes; the admitted."""
    start = threading.Barrier(racers)
    admitted: list[TestClient] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        start.wait()
        try:
            c = engine.connect(user, f"{prefix}x{i}", node=i)
        except ConnectRefused:
            return
        with lock:
            admitted.append(c)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return admitted


def test_connects_racing_through_every_node_never_exceed_the_limit(
    engine: EngineUnderTest,
) -> None:
    """The last free slot, raced for by several CONNECTs at once through every node (on NATS:
    through every node's auth callout): exactly one gets it, round after round."""
    user = f"race{secrets.token_hex(3)}"
    limit = engine.max_connections
    racers = max(6, 2 * engine.nodes)
    held = [engine.connect(user, f"{user}-h{i}", node=i) for i in range(limit - 1)]
    try:
        time.sleep(0.3)  # presence reaches every callout (NATS)
        for rnd in range(3):
            admitted = _race(engine, user, f"{user}-r{rnd}", racers)
            try:
                assert len(admitted) <= 1, (
                    f"round {rnd}: {len(admitted)} of {racers} racing CONNECTs admitted with "
                    f"{limit - 1} of {limit} slots taken"
                )
                assert len(admitted) == 1, f"round {rnd}: the free slot went to nobody"
            finally:
                for c in admitted:
                    c.close()
            time.sleep(0.5)  # the winner's DISCONNECT frees the slot everywhere
    finally:
        for c in held:
            c.close()
