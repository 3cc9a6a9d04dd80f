"""MQTT 5 enhanced authentication, method "jwt": the token as authentication data.

Mosquitto 2.0 keeps a client's password for the whole connection; authentication data is
freed once checked. The plugin applies exactly the same rules as for a password, and a fresh
token sent in an AUTH packet (re-authentication) extends a live connection's expiry.
"""

from __future__ import annotations

import struct
import time

from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.topics import user_filter
from tests.support.broker import BrokerFactory, BrokerHandle
from tests.support.mqtt import RawClient, _str, _varint

METHOD = "jwt"
AUTH = 0xF0
SUCCESS, REAUTHENTICATE = 0x00, 0x19
NOT_AUTHORIZED, BAD_AUTH_METHOD = 0x87, 0x8C


def _props(method: str | None, data: str | None) -> bytes:
    body = b""
    if method is not None:
        body += b"\x15" + _str(method)
    if data is not None:
        body += b"\x16" + _str(data)
    return _varint(len(body)) + body


def connect_v5(client_id: str, username: str | None, method: str | None, data: str | None) -> bytes:
    flags = 0x02 | (0x80 if username is not None else 0)
    var = _str("MQTT") + bytes([5, flags]) + struct.pack("!H", 30) + _props(method, data)
    payload = _str(client_id) + (_str(username) if username is not None else b"")
    body = var + payload
    return bytes([0x10]) + _varint(len(body)) + body


def auth_packet(reason: int, method: str, data: str) -> bytes:
    body = bytes([reason]) + _props(method, data)
    return bytes([AUTH]) + _varint(len(body)) + body


def subscribe_v5(packet_id: int, topic_filter: str) -> bytes:
    body = struct.pack("!H", packet_id) + b"\x00" + _str(topic_filter) + b"\x01"
    return bytes([0x82]) + _varint(len(body)) + body


def _open(
    b: BrokerHandle, client_id: str, user: str | None, method: str | None, token: str | None
) -> tuple[RawClient, int]:
    raw = RawClient(b.port)
    raw.send(connect_v5(client_id, user, method, token))
    return raw, raw.connack()


def test_token_as_authentication_data_follows_the_password_rules(broker: BrokerHandle) -> None:
    user = "eauth1"
    raw, code = _open(broker, f"{user}-a", user, METHOD, broker.token(user))
    try:
        assert code == SUCCESS
        raw.send(subscribe_v5(1, user_filter(user)))
        assert raw.suback(version=5) == [1]
        raw.send(subscribe_v5(2, "#"))
        assert raw.suback(version=5)[0] >= 0x80
    finally:
        raw.close()
    # The same refusals as with a password.
    expired = mint_mqtt_token(broker.settings.mqtt_signer, user, 10, now=int(time.time()) - 100)
    refusals = [
        (f"{user}-b", user, broker.token(user)[:-4] + "AAAA"),  # bad signature
        (f"{user}-c", user, broker.token("eauth2")),  # someone else's token
        ("eauth2-d", user, broker.token(user)),  # someone else's client id
        (f"{user}-e", None, broker.token(user)),  # no username
        (f"{user}-f", user, expired),
        (f"{user}-g", user, ""),  # no token
    ]
    for client_id, username, token in refusals:
        raw, code = _open(broker, client_id, username, METHOD, token)
        raw.close()
        assert code == NOT_AUTHORIZED, (client_id, username, hex(code))
    raw, code = _open(broker, f"{user}-h", user, "SCRAM-SHA-1", broker.token(user))
    raw.close()
    assert code == BAD_AUTH_METHOD


def test_reauthentication_extends_a_live_connection(broker_factory: BrokerFactory) -> None:
    b = broker_factory(mqtt_expiry_check_seconds=1, mqtt_leeway_seconds=0)
    user = "eauth3"
    raw, code = _open(b, user, user, METHOD, b.token(user, ttl=3))
    assert code == SUCCESS
    try:
        time.sleep(1)
        raw.send(auth_packet(REAUTHENTICATE, METHOD, b.token(user, ttl=60)))
        first, body = raw.read_packet()
        assert first == AUTH and body[0] == SUCCESS, (hex(first), body)
        # Past the first token's exp: still connected, and still allowed to subscribe.
        time.sleep(4)
        raw.send(subscribe_v5(1, user_filter(user)))
        assert raw.suback(version=5) == [1]
        # A token of another user is refused and ends the connection.
        raw.send(auth_packet(REAUTHENTICATE, METHOD, b.token("eauth4", ttl=60)))
        assert raw.closed(timeout=3)
    finally:
        raw.close()
    # Without re-authentication the connection is kicked at its token's expiry.
    raw, code = _open(b, f"{user}-x", user, METHOD, b.token(user, ttl=2))
    assert code == SUCCESS
    try:
        assert raw.closed(timeout=6)
    finally:
        raw.close()
    assert "refused re-authentication user=eauth3" in b.log_text()
