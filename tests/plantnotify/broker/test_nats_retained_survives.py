"""On NATS the worker's retained-state rebuild is unnecessary: retained events outlive nodes.

On Mosquitto the outbox re-publishes recent retained events when it sees a new broker boot,
because a SIGKILLed Mosquitto loses what it had not saved yet. The NATS engine keeps MQTT
retained messages in a JetStream stream replicated on the three nodes, on disk, and announces
no boot, so the worker never rebuilds there. This shows why it need not: retained events that
were PUBACKed survive the SIGKILL of the node they were published to, and then of the whole
cluster (every node SIGKILLed at once, as a power loss would), and reach a new subscriber on
every node afterwards.
"""

from __future__ import annotations

import json
import queue
import secrets
import time
from pathlib import Path

import pytest

from plantnotify.contracts.topics import analyses_filter, analysis_topic
from plantnotify.settings import Settings
from tests.contract.engines import EngineUnderTest
from tests.support.mqtt import V311, ConnectRefused
from tests.support.nats import start_nats_cluster

EVENTS = 20


def _retained(engine: EngineUnderTest, user: str, node: int, transport: str) -> dict[str, bytes]:
    """What a new subscription of ``user`` on ``node`` gets replayed (topic -> payload).

    Right after a node dies JetStream elects new stream leaders (6-10 s, shared notes): a
    CONNECT or SUBSCRIBE may wait for that, and a granted subscription may get its replay only
    afterwards. So a fresh subscription is tried again until one gets every event or 60 s have
    passed; the most complete replay seen is returned."""
    deadline = time.monotonic() + 60
    best: dict[str, bytes] = {}
    while len(best) < EVENTS and time.monotonic() < deadline:
        try:
            client = engine.connect(user, node=node, transport=transport)
        except (ConnectRefused, OSError, AssertionError):  # refused, or no CONNACK in time
            time.sleep(1)
            continue
        try:
            try:
                granted = client.subscribe(analyses_filter(user), timeout=15)
            except queue.Empty:
                granted = []
            got: dict[str, bytes] = {}
            while granted == [1] and len(got) < EVENTS:
                try:
                    msg = client.wait_message(10)
                except queue.Empty:
                    break
                assert msg.retain, f"a replay without the retain flag: {msg.topic}"
                got[msg.topic] = msg.payload
            if len(got) > len(best):
                best = got
        finally:
            client.close()
    return best


@pytest.mark.timeout(600)
def test_retained_events_outlive_a_node_and_the_whole_cluster(
    base_settings: Settings, tmp_path: Path
) -> None:
    handle = start_nats_cluster(base_settings, tmp_path / "nats")
    try:
        engine = EngineUnderTest("nats", handle.settings, handle.ports, handle.ws_ports, (V311,))
        user = f"keep{secrets.token_hex(3)}"
        expected = {
            analysis_topic(user, f"a{i}"): json.dumps({"eventId": f"e{i}"}).encode()
            for i in range(EVENTS)
        }
        publisher = engine.service("keep-pub", node=0)
        try:
            for topic, payload in expected.items():
                assert publisher.publish(topic, payload, retain=True) == 0  # PUBACKed
        finally:
            publisher.close()

        # The node that took the PUBLISHes dies; the other two still have every event.
        handle.cluster.kill_node(0)
        for node, transport in ((1, "tcp"), (2, "websockets")):
            assert _retained(engine, user, node, transport) == expected, f"node {node}"

        # Every node SIGKILLed (nothing saved on a signal), then started again.
        handle.cluster.kill_node(1)
        handle.cluster.kill_node(2)
        handle.cluster.start_nodes([0, 1, 2], timeout=90)
        handle.cluster.wait_accepting(timeout=60)
        for node in range(3):
            assert _retained(engine, user, node, "tcp") == expected, f"node {node} after restart"
    finally:
        handle.cluster.stop()
