"""Delivery guarantees, the same on every engine: retained QoS 1 events reach new and
persistent subscribers, on any node; a second connection with the same client id takes over."""

from __future__ import annotations

import secrets

from plantnotify.contracts.topics import analyses_filter, analysis_topic
from tests.contract.engines import EngineUnderTest


def _user(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


def test_retained_qos1_event_reaches_live_and_new_subscribers(engine: EngineUnderTest) -> None:
    user = _user("ret")
    live = engine.connect(user, node=2)
    assert live.subscribe(analyses_filter(user)) == [1]
    svc = engine.service("ret-pub", node=0)
    topic = analysis_topic(user, "a1")
    try:
        svc.publish(topic, b'{"eventId":"e1"}', retain=True)
        got = live.wait_message(5, topic=topic)
        # A live delivery carries retain 0 and a replay to a new subscription retain 1 (MQTT
        # 3.1.1 and 5, section 3.3.1.3): the bridge keeps the one and skips the other.
        assert (got.payload, got.retain, got.qos) == (b'{"eventId":"e1"}', False, 1)
        for node in range(engine.nodes):
            late = engine.connect(user, node=node, transport="websockets" if node else "tcp")
            try:
                assert late.subscribe(analyses_filter(user)) == [1]
                msg = late.wait_message(5, topic=topic)
                assert (msg.payload, msg.retain, msg.qos) == (b'{"eventId":"e1"}', True, 1)
            finally:
                late.close()
    finally:
        live.close()
        svc.close()


def test_persistent_session_gets_what_was_published_while_away(
    engine: EngineUnderTest, protocol: int
) -> None:
    user = _user("per")
    cid = f"{user}-phone"
    first = engine.connect(user, cid, node=0, clean=False, protocol=protocol)
    assert first.subscribe(analyses_filter(user)) == [1]
    first.close()
    svc = engine.service("per-pub", node=1)
    sent = [analysis_topic(user, f"a{i}") for i in range(3)]
    for topic in sent:
        svc.publish(topic, topic.encode())
    svc.close()
    again = engine.connect(user, cid, node=engine.nodes - 1, clean=False, protocol=protocol)
    try:
        got = {again.wait_message(5).topic for _ in sent}
        assert got == set(sent)
    finally:
        again.close()


def test_same_client_id_takes_over_the_session(engine: EngineUnderTest) -> None:
    user = _user("tko")
    cid = f"{user}-phone"
    old = engine.connect(user, cid, node=0)
    new = engine.connect(user, cid, node=engine.nodes - 1)
    try:
        assert old.disconnected.wait(5), "the old connection was not closed"
        assert new.subscribe(analyses_filter(user)) == [1]
        svc = engine.service("tko-pub", node=1)
        svc.publish(analysis_topic(user, "t"), b"{}")
        assert new.wait_message(5).topic == analysis_topic(user, "t")
        svc.close()
        assert not new.disconnected.is_set()
    finally:
        new.close()
        old.close()
