"""The session broker works end to end: a user gets their own events and nothing else."""

from __future__ import annotations

import pytest

from plantnotify.contracts.events import BrokerBoot
from plantnotify.contracts.ids import new_client_id
from plantnotify.contracts.topics import BROKER_BOOT_TOPIC, analysis_topic, user_filter
from tests.support.broker import BrokerHandle
from tests.support.mqtt import ConnectRefused, connect


def test_user_receives_own_events_and_nothing_else(broker: BrokerHandle) -> None:
    svc = connect(broker.port, "svc-basics", broker.token("svc-basics", service=True), "svc-basics")
    alice = connect(broker.port, "alice1", broker.token("alice1"), new_client_id("alice1"))
    try:
        assert alice.subscribe(user_filter("alice1")) == [1]
        svc.publish(analysis_topic("alice1", "a1"), b'{"n":1}', retain=True)
        svc.publish(analysis_topic("bob1", "b1"), b'{"n":2}', retain=True)
        got = alice.drain(0.5)
        assert [(m.topic, m.payload) for m in got] == [(analysis_topic("alice1", "a1"), b'{"n":1}')]
    finally:
        alice.close()
        svc.close()


def test_retained_event_reaches_a_late_subscriber(broker: BrokerHandle) -> None:
    svc = connect(broker.port, "svc-basics", broker.token("svc-basics", service=True), "svc-basics")
    svc.publish(analysis_topic("carol1", "c1"), b'{"late":true}', retain=True)
    svc.close()
    carol = connect(broker.port, "carol1", broker.token("carol1"), "carol1")
    try:
        assert carol.subscribe(user_filter("carol1")) == [1]
        msg = carol.wait_message(3)
        assert (msg.topic, msg.payload, msg.retain) == (
            analysis_topic("carol1", "c1"),
            b'{"late":true}',
            True,
        )
    finally:
        carol.close()


def test_boot_event_is_retained_for_services(broker: BrokerHandle) -> None:
    svc = connect(broker.port, "svc-boot", broker.token("svc-boot", service=True), "svc-boot")
    try:
        assert svc.subscribe(BROKER_BOOT_TOPIC) == [1]
        boot = BrokerBoot.model_validate_json(svc.wait_message(3, BROKER_BOOT_TOPIC).payload)
        assert len(boot.boot_id) == 32
        assert boot.started_at > 0
    finally:
        svc.close()


def test_websocket_clients_get_the_same_rules(broker: BrokerHandle) -> None:
    svc = connect(broker.port, "svc-ws", broker.token("svc-ws", service=True), "svc-ws")
    ws = connect(
        broker.ws_port,
        "wsuser1",
        broker.token("wsuser1"),
        "wsuser1-browser",
        transport="websockets",
    )
    try:
        assert ws.subscribe(user_filter("wsuser1")) == [1]
        assert ws.subscribe(user_filter("wsuser2")) == [0x87]
        assert ws.subscribe("#") == [0x87]
        svc.publish(analysis_topic("wsuser1", "w1"), b"{}")
        svc.publish(analysis_topic("wsuser2", "w2"), b"{}")
        assert [m.topic for m in ws.drain(0.5)] == [analysis_topic("wsuser1", "w1")]
        assert ws.publish(analysis_topic("wsuser2", "x"), b"{}", retain=True) == 0x87
    finally:
        ws.close()
        svc.close()
    with pytest.raises(ConnectRefused):
        connect(
            broker.ws_port, "wsuser1", broker.token("wsuser2"), "wsuser1", transport="websockets"
        )
