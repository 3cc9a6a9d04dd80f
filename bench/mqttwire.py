"""The few MQTT packets the bench's load agents need, encoded and decoded by hand.

The agents share two cores with the broker and the services they measure, so they must cost
far less per message than what they measure: a full client library (paho: ~250 µs of CPU per
received event here) would make the bench measure itself. Only what the agents use is here:
CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH/PUBACK (QoS 0/1), PINGREQ/PINGRESP, DISCONNECT, for
MQTT 3.1.1 (level 4) and 5 (level 5, with empty property sets), plus WebSocket framing
(RFC 6455) for the MQTT-over-WebSocket listeners.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Iterator

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGREQ_TYPE, PINGRESP_TYPE, DISCONNECT_TYPE = 12, 13, 14

CONNACK_ACCEPTED = 0
CONNACK_REASONS = {
    0: "accepted",
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x97: "quota exceeded",
}
PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"


class ProtocolError(ValueError):
    """The peer sent something these agents do not expect."""


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: str) -> bytes:
    data = s.encode()
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


def connect_packet(
    client_id: str,
    username: str | None,
    password: str | None,
    keepalive: int,
    protocol: int = 4,
    auth: tuple[str, str] | None = None,
    *,
    clean: bool = True,
    session_expiry: int = 0,
) -> bytes:
    """CONNECT; ``auth`` (MQTT 5 only): (authentication method, authentication data);
    ``clean=False`` with a ``session_expiry`` (MQTT 5) resumes a persistent session (its
    queued QoS-1 messages are delivered on reconnect)."""
    flags = 0x02 if clean else 0x00  # clean session / clean start
    payload = utf8(client_id)
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += utf8(password)
    variable = utf8("MQTT") + bytes([protocol, flags]) + struct.pack("!H", keepalive)
    if protocol == 5:
        props = b""
        if session_expiry:
            props += b"\x11" + struct.pack("!I", session_expiry)  # Session Expiry Interval
        if auth is not None:
            props += b"\x15" + utf8(auth[0]) + b"\x16" + utf8(auth[1])
        variable += remaining_length(len(props)) + props
    return _packet(0x10, variable + payload)


def subscribe_packet(packet_id: int, filters: list[str], qos: int, protocol: int = 4) -> bytes:
    body = struct.pack("!H", packet_id)
    if protocol == 5:
        body += b"\x00"
    for f in filters:
        body += utf8(f) + bytes([qos])
    return _packet(0x82, body)


def publish_packet(
    topic: str, payload: bytes, *, qos: int, retain: bool, packet_id: int = 0, protocol: int = 4
) -> bytes:
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    body = utf8(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if protocol == 5:
        body += b"\x00"
    return _packet(first, body + payload)


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)


def connack_code(body: bytes) -> int:
    """Return code (3.1.1) or reason code (5) of a CONNACK body."""
    if len(body) < 2:
        raise ProtocolError("short CONNACK")
    return body[1]


def parse_publish(flags: int, body: bytes, protocol: int) -> tuple[str, int, bytes]:
    """(topic, packet id or 0, payload) of a PUBLISH body."""
    (tlen,) = struct.unpack_from("!H", body, 0)
    topic = body[2 : 2 + tlen].decode()
    pos = 2 + tlen
    packet_id = 0
    if (flags >> 1) & 3:
        (packet_id,) = struct.unpack_from("!H", body, pos)
        pos += 2
    if protocol == 5:
        plen, pos = _varint(body, pos)
        pos += plen
    return topic, packet_id, body[pos:]


def suback_codes(body: bytes, protocol: int) -> bytes:
    """The per-filter return/reason codes of a SUBACK body."""
    pos = 2
    if protocol == 5:
        plen, pos = _varint(body, pos)
        pos += plen
    return body[pos:]


def _varint(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise IndexError
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ProtocolError("malformed remaining length")


class PacketReader:
    """Splits a byte stream into MQTT packets: feed bytes, iterate (type, flags, body)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, int, bytes]]:
        self._buf += data
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 2:
            try:
                length, start = _varint(buf, pos + 1)
            except IndexError:
                break
            end = start + length
            if end > len(buf):
                break
            first = buf[pos]
            yield first >> 4, first & 0x0F, bytes(buf[start:end])
            pos = end
        del buf[:pos]


# --- WebSocket (RFC 6455), client side ----------------------------------------------------


def ws_handshake(host: str, port: int, path: str = "/mqtt") -> tuple[bytes, str]:
    """The HTTP upgrade request and its Sec-WebSocket-Key."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    return request.encode(), key


WS_BINARY, WS_PONG = 0x2, 0xA


def ws_frame(payload: bytes, opcode: int = WS_BINARY) -> bytes:
    """One masked final frame (clients must mask, RFC 6455 §5.3)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        header = bytes([first, 0x80 | n])
    elif n < 65536:
        header = bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    else:
        header = bytes([first, 0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    if not n:
        return header + mask
    repeated = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return header + mask + masked


class WsReader:
    """Splits server frames; yields (opcode, payload). Server frames are never masked."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self._buf += data
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 2:
            opcode = buf[pos] & 0x0F
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                (n,) = struct.unpack_from("!H", buf, pos + 2)
                head = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                (n,) = struct.unpack_from("!Q", buf, pos + 2)
                head = 10
            if len(buf) - pos < head + n:
                break
            yield opcode, bytes(buf[pos + head : pos + head + n])
            pos += head + n
        del buf[:pos]
