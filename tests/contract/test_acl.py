"""What a user may subscribe and publish to, the same on every engine (contract §2)."""

from __future__ import annotations

import pytest

from plantnotify.contracts.topics import analysis_topic, receipts_topic, user_filter
from tests.contract.engines import EngineUnderTest

GRANTED = [1]
REFUSED = [0x80]

DENIED_FILTERS = [
    "users/other1/#",
    "users/other1/analyses/+",
    "users/+/analyses/+",
    "users/#",
    "#",
    "+/acl1/#",
    "$SYS/#",
    "$share/g/users/acl1/#",
    "plantnotify/sessions/+",
]


def test_own_filters_are_granted(engine: EngineUnderTest) -> None:
    c = engine.connect("acl1", node=1)
    try:
        for f in (user_filter("acl1"), "users/acl1/analyses/+", "users/acl1/+/x"):
            assert c.subscribe(f) == GRANTED, f
    finally:
        c.close()


@pytest.mark.parametrize("topic_filter", DENIED_FILTERS)
def test_foreign_and_wide_filters_are_refused(engine: EngineUnderTest, topic_filter: str) -> None:
    c = engine.connect("acl1", node=2)
    try:
        assert c.subscribe(topic_filter) == REFUSED
    finally:
        c.close()


def test_a_user_publishes_only_receipts_of_its_own(engine: EngineUnderTest) -> None:
    """Refused publishes never reach anyone (NATS still PUBACKs them; Mosquitto on 3.1.1 too)."""
    svc = engine.service("acl-watch", node=0)
    assert svc.subscribe("users/#") == GRANTED
    user = engine.connect("acl2", node=1)
    try:
        user.publish(analysis_topic("acl2", "forged"), b'{"forged":true}')
        user.publish(analysis_topic("other2", "forged"), b'{"forged":true}')
        user.publish(receipts_topic("other2"), b'{"eventId":"x"}')
        user.publish(receipts_topic("acl2"), b'{"eventId":"mine"}')
        got = svc.drain(1.0)
        assert [(m.topic, m.payload) for m in got] == [
            (receipts_topic("acl2"), b'{"eventId":"mine"}')
        ]
    finally:
        user.close()
        svc.close()


def test_a_user_never_reads_another_users_events(engine: EngineUnderTest) -> None:
    svc = engine.service("acl-pub", node=2)
    a = engine.connect("acl3", node=0)
    try:
        assert a.subscribe(user_filter("acl3")) == GRANTED
        svc.publish(analysis_topic("acl4", "x"), b"{}")
        svc.publish(analysis_topic("acl3", "y"), b"{}")
        assert [m.topic for m in a.drain(0.8)] == [analysis_topic("acl3", "y")]
    finally:
        a.close()
        svc.close()
