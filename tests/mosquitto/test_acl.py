"""Topic rights on the live broker: user A against user B, services, forged service events.

S2: every forbidden SUBSCRIBE gets a failure SUBACK, 0 messages for B ever reach A, and no
client publish (forged, retained, empty-retained, Will) changes B's retained payload.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from plantnotify.contracts.events import BrokerBoot, SessionSnapshot
from plantnotify.contracts.topics import (
    ALL_SESSIONS_FILTER,
    BROKER_BOOT_TOPIC,
    analysis_topic,
    receipts_topic,
    session_topic,
    user_filter,
)
from tests.support.broker import BrokerHandle
from tests.support.mqtt import (
    V5,
    V311,
    Message,
    RawClient,
    TestClient,
    connect,
    connect_packet,
    raw_connect,
    subscribe_packet,
)

FAILURE = {V311: 0x80, V5: 0x87}  # SUBACK failure / Not authorized


def _service(broker: BrokerHandle, name: str) -> TestClient:
    return connect(broker.port, name, broker.token(name, service=True), name)


def _retained(broker: BrokerHandle, topic_filter: str, wait: float = 0.5) -> list[Message]:
    reader = _service(broker, "svc-acl-reader")
    try:
        assert reader.subscribe(topic_filter) == [1]
        return reader.drain(wait)
    finally:
        reader.close()


def _forbidden_filters(a: str, b: str) -> list[str]:
    return [
        user_filter(b),
        f"users/{b}/analyses/+",
        analysis_topic(b, "b-1"),
        "#",
        "+/#",
        "+/+/#",
        f"+/{b}/#",
        "users/+/analyses/+",
        "users/#",
        "$SYS/#",
        "$SYS/broker/clients/connected",
        f"$share/g/{user_filter(b)}",
        f"$share/g/{user_filter(a)}",
        "plantnotify/#",
        ALL_SESSIONS_FILTER,
        session_topic(b),
        BROKER_BOOT_TOPIC,
        f"users/{a}",  # the user root itself is outside users/{a}/
        f"users/{a}x/#",
    ]


@pytest.mark.parametrize("protocol", [V311, V5], ids=["mqtt311", "mqtt5"])
def test_forbidden_subscriptions_fail_and_nothing_of_b_reaches_a(
    broker: BrokerHandle, protocol: int
) -> None:
    a, b = f"alice-acl{protocol}", f"bob-acl{protocol}"
    svc = _service(broker, "svc-acl")
    svc.publish(analysis_topic(b, "b-1"), b'{"secret":"of b"}', retain=True)
    alice = connect(broker.port, a, broker.token(a), f"{a}-phone", protocol=protocol)
    bob = connect(broker.port, b, broker.token(b), f"{b}-phone", protocol=protocol)
    try:
        for topic_filter in _forbidden_filters(a, b):
            assert alice.subscribe(topic_filter) == [FAILURE[protocol]], topic_filter
        # One SUBSCRIBE with several filters: each gets its own verdict.
        codes: list[int] = []
        mid, _ = None, None
        done: list[list[int]] = []

        def on_subscribe(c: object, u: object, m: int, rcs: list, p: object) -> None:  # type: ignore[type-arg]
            done.append([int(rc.value) for rc in rcs])

        alice.client.on_subscribe = on_subscribe
        alice.client.subscribe([(user_filter(a), 1), (user_filter(b), 1)])
        deadline = time.monotonic() + 5
        while not done and time.monotonic() < deadline:
            time.sleep(0.01)
        codes = done[0]
        assert codes == [1, FAILURE[protocol]]
        del mid

        # B's world keeps moving: live events, retained events, receipts, session events.
        svc.publish(analysis_topic(b, "b-2"), b'{"live":"b"}')
        svc.publish(analysis_topic(b, "b-3"), b'{"retained":"b"}', retain=True)
        bob.publish(receipts_topic(b), b'{"eventId":"b"}')
        svc.publish(analysis_topic(a, "a-1"), b'{"for":"a"}')
        got = alice.drain(1.0)
        assert [m.topic for m in got] == [analysis_topic(a, "a-1")]
        assert all(m.topic.startswith(f"users/{a}/") for m in got)
    finally:
        alice.close()
        bob.close()
        svc.close()


@pytest.mark.parametrize("version", [4, 5], ids=["mqtt311", "mqtt5"])
def test_raw_suback_codes(broker: BrokerHandle, version: int) -> None:
    user = f"raw-acl{version}"
    code, raw = raw_connect(broker.port, user, user, broker.token(user), version=version)
    try:
        assert code == 0
        filters: list[str | bytes] = [
            user_filter(user),
            "#",
            "$SYS/#",
            f"$share/g/users/{user}/#",
            "users/+/#",
        ]
        raw.send(subscribe_packet(7, filters, version=version))
        fail = 0x80 if version == 4 else 0x87
        assert raw.suback(version) == [1, fail, fail, fail, fail]
    finally:
        raw.close()


@pytest.mark.parametrize("protocol", [V311, V5], ids=["mqtt311", "mqtt5"])
def test_client_publishes_cannot_touch_other_or_service_topics(
    broker: BrokerHandle, protocol: int
) -> None:
    a, b = f"alice-pub{protocol}", f"bob-pub{protocol}"
    svc = _service(broker, "svc-pub")
    original = b'{"event":"AnalysisCompleted","for":"bob","n":1}'
    svc.publish(analysis_topic(b, "keep"), original, retain=True)
    watcher = _service(broker, "svc-pub-watch")
    assert watcher.subscribe("users/+/#") == [1]
    assert watcher.subscribe("plantnotify/#") == [1]
    watcher.drain(0.3)  # retained backlog

    alice = connect(broker.port, a, broker.token(a), f"{a}-phone", protocol=protocol)
    forged = [
        (analysis_topic(b, "keep"), b'{"forged":true}', True),
        (analysis_topic(b, "keep"), b"", True),  # would delete B's retained event
        (analysis_topic(b, "new"), b'{"forged":true}', False),
        (receipts_topic(b), b'{"eventId":"x"}', False),
        (analysis_topic(a, "self"), b'{"forged":true}', False),  # own events come from the worker
        (analysis_topic(a, "self"), b'{"forged":true}', True),
        (receipts_topic(a), b'{"eventId":"x"}', True),  # receipts are never retained
        (session_topic(a), b'{"connections":0}', True),
        (session_topic(b), b'{"connections":0}', False),
        (BROKER_BOOT_TOPIC, b'{"bootId":"forged"}', True),
        ("$SYS/broker/forged", b"x", False),
        ("users", b"x", False),
    ]
    try:
        for topic, payload, retain in forged:
            reason = alice.publish(topic, payload, qos=1, retain=retain)
            if protocol == V5:
                assert reason == 0x87, (topic, retain, reason)  # PUBACK "Not authorized"
        # The one thing a user may publish: a non-retained receipt on its own topic.
        assert alice.publish(receipts_topic(a), b'{"eventId":"ok"}', qos=1) == 0
        got = watcher.drain(1.0)
        # Alice's own connection is announced by the plugin; everything else must be absent.
        boot = BrokerBoot.model_validate_json(_retained(broker, BROKER_BOOT_TOPIC, 0.3)[0].payload)
        snapshots = [m for m in got if m.topic == session_topic(a)]
        for m in snapshots:
            snap = SessionSnapshot.model_validate_json(m.payload)
            assert (snap.boot_id, snap.user_id) == (boot.boot_id, a)
        # The watcher shares the session broker with other tests: only the topics alice
        # attacked count, and a late retained backlog (retain flag set) does not; live copies
        # of anything alice got through arrive without the retain flag.
        attacked = {topic for topic, _, _ in forged} | {receipts_topic(a)}
        others = [
            (m.topic, m.payload)
            for m in got
            if m not in snapshots and not m.retain and m.topic in attacked
        ]
        assert others == [(receipts_topic(a), b'{"eventId":"ok"}')]
    finally:
        alice.close()
        watcher.close()
        svc.close()
    retained = _retained(broker, user_filter(b))
    assert [(m.topic, m.payload) for m in retained if m.topic == analysis_topic(b, "keep")] == [
        (analysis_topic(b, "keep"), original)
    ]
    assert not [m for m in retained if m.topic == analysis_topic(b, "new")]
    for m in _retained(broker, session_topic(a), 0.3):
        assert SessionSnapshot.model_validate_json(m.payload).boot_id == boot.boot_id
    boots = _retained(broker, BROKER_BOOT_TOPIC, 0.3)
    assert len(boots) == 1 and b"forged" not in boots[0].payload


def _die_with_will(broker: BrokerHandle, user: str, will: tuple[str, bytes, int, bool]) -> None:
    raw = RawClient(broker.port)
    raw.send(connect_packet(f"{user}-x", user, broker.token(user), will=will))
    assert raw.connack() == 0
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()  # RST, no DISCONNECT: the broker sends the Will if the plugin allows it


def test_will_message_to_another_users_topic_is_dropped(broker: BrokerHandle) -> None:
    a, b = "alice-will", "bob-will"
    svc = _service(broker, "svc-will")
    original = b'{"for":"bob-will"}'
    svc.publish(analysis_topic(b, "w"), original, retain=True)
    watcher = _service(broker, "svc-will-watch")
    assert watcher.subscribe(user_filter(b)) == [1]
    watcher.drain(0.3)
    # Positive control: a Will the user may send (its own receipt) is delivered on RST.
    assert watcher.subscribe(receipts_topic(a)) == [1]
    _die_with_will(broker, a, (receipts_topic(a), b'{"eventId":"will"}', 1, False))
    assert [m.topic for m in watcher.drain(1.0)] == [receipts_topic(a)]
    # A retained, empty Will on B's topic would delete B's event: it must go nowhere.
    _die_with_will(broker, a, (analysis_topic(b, "w"), b"", 1, True))
    try:
        assert watcher.drain(1.0) == []
    finally:
        watcher.close()
        svc.close()
    retained = _retained(broker, analysis_topic(b, "w"))
    assert [m.payload for m in retained] == [original]


def test_users_cannot_read_session_events_even_when_subscribed_before(broker: BrokerHandle) -> None:
    """READ is decided per delivery too: nothing under plantnotify/ reaches a user."""
    a = "alice-read"
    alice = connect(broker.port, a, broker.token(a), a)
    svc = _service(broker, "svc-read")
    try:
        assert alice.subscribe(user_filter(a)) == [1]
        svc.publish(f"users/{a}", b"root is not inside users/{a}/")
        svc.publish(session_topic(a), b"{}")
        svc.publish(analysis_topic(a, "ok"), b"{}")
        assert [m.topic for m in alice.drain(0.8)] == [analysis_topic(a, "ok")]
    finally:
        alice.close()
        svc.close()


def test_service_role_may_do_everything(broker: BrokerHandle) -> None:
    svc = _service(broker, "svc-all")
    try:
        for topic_filter in (
            "#",
            "$SYS/#",
            "users/+/#",
            "$share/g/users/+/receipts",
            "plantnotify/#",
        ):
            assert svc.subscribe(topic_filter)[0] in (0, 1), topic_filter
        assert svc.publish(analysis_topic("someone", "x"), b"{}", retain=True) == 0
    finally:
        svc.close()
