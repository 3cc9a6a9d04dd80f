"""Authentication, the same on every engine (contract §2): tokens and identities.

Over MQTT/TCP and WebSocket, with every protocol level the engine accepts; spread over the
engine's nodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from plantnotify.contracts.topics import analyses_filter, analysis_topic
from tests.contract.engines import EngineUnderTest
from tests.mosquitto.tokens import claims, hs256, unsigned
from tests.support.mqtt import V5, V311, ConnectRefused

HS = {"alg": "HS256", "typ": "JWT"}


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_a_good_token_connects_and_receives(
    engine: EngineUnderTest, transport: str, protocol: int
) -> None:
    user = f"good{transport[0]}{protocol}"
    svc = engine.service(f"auth-{user}", node=1)
    for node in range(engine.nodes):
        client = engine.connect(user, node=node, transport=transport, protocol=protocol)
        try:
            assert client.subscribe(analyses_filter(user)) == [1]
            topic = analysis_topic(user, f"a{node}")
            svc.publish(topic, b'{"n":1}')
            assert client.wait_message(5, topic=topic).payload == b'{"n":1}'
        finally:
            client.close()
    svc.close()


def test_a_protocol_level_the_engine_lacks_is_refused_cleanly(engine: EngineUnderTest) -> None:
    """NATS speaks MQTT 3.1.1 only: an MQTT 5 CONNECT is refused, never half-accepted."""
    for protocol in {V311, V5} - set(engine.protocols):
        for transport in ("tcp", "websockets"):
            with pytest.raises((ConnectRefused, AssertionError)):
                engine.connect("good0", transport=transport, protocol=protocol)
    for protocol in engine.protocols:
        engine.connect("good0", protocol=protocol).close()


@dataclass(frozen=True)
class Bad:
    name: str
    password: Callable[[str], str]  # secret -> password
    username: str = "bad1"
    client_id: str = "bad1-phone"


NOW = int(time.time())
BAD = [
    Bad("expired", lambda s: hs256(HS, claims("bad1", ttl=-60), s)),
    Bad("wrong-alg-HS512", lambda s: hs256({"alg": "HS512", "typ": "JWT"}, claims("bad1"), s)),
    Bad("alg-none", lambda s: unsigned({"alg": "none"}, claims("bad1"))),
    Bad("wrong-audience", lambda s: hs256(HS, claims("bad1", aud="plantnotify-api"), s)),
    Bad("wrong-secret", lambda s: hs256(HS, claims("bad1"), s + "x")),
    Bad("no-exp", lambda s: hs256(HS, claims("bad1", exp=None), s)),
    Bad("username-is-not-sub", lambda s: hs256(HS, claims("bad2"), s), "bad1", "bad1-phone"),
    Bad("foreign-client-id", lambda s: hs256(HS, claims("bad1"), s), "bad1", "bad2-phone"),
    Bad("client-id-prefix-without-dash", lambda s: hs256(HS, claims("bad1"), s), "bad1", "bad10"),
    Bad("empty-password", lambda s: "", "bad1", "bad1-phone"),
]


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_bad_credentials_are_refused(engine: EngineUnderTest, bad: Bad) -> None:
    password = bad.password(engine.settings.jwt_secret)
    for transport in ("tcp", "websockets"):
        with pytest.raises(ConnectRefused):
            engine.connect(
                bad.username,
                bad.client_id,
                token=password,
                transport=transport,
                node=len(bad.name),
            )


def test_anonymous_is_refused(engine: EngineUnderTest) -> None:
    from tests.support.mqtt import connect

    with pytest.raises(ConnectRefused):
        connect(engine.port(1), None, None, "anon-1", protocol=V311)
