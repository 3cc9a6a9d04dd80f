"""Small synchronous MQTT test clients: paho-mqtt 2.x for normal flows, raw packets where paho
hides details (exact CONNACK/SUBACK codes, bytes paho refuses to send).

paho callbacks only hand results over (queues and events); tests read them with timeouts.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int


@dataclass
class TestClient:
    """A connected paho client whose callbacks feed queues."""

    __test__ = False  # not a pytest test class

    client: mqtt.Client
    client_id: str
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    disconnected: threading.Event = field(default_factory=threading.Event)
    disconnect_reasons: list[Any] = field(default_factory=list)

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> list[int]:
        """Reason codes of the SUBACK (0-2 granted QoS; >= 0x80 failure)."""
        done: queue.Queue[list[int]] = queue.Queue()

        def on_subscribe(c: Any, u: Any, mid: int, codes: list[Any], props: Any) -> None:
            done.put([int(rc.value) for rc in codes])

        self.client.on_subscribe = on_subscribe
        rc, _ = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {rc}"
        return done.get(timeout=timeout)

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 5.0
    ) -> int:
        """Publishes and waits for the PUBACK (QoS 1); returns its reason code (v5) or 0."""
        acked: queue.Queue[int] = queue.Queue()

        def on_publish(c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
            acked.put(int(reason.value) if reason is not None else 0)

        self.client.on_publish = on_publish
        self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return 0
        return acked.get(timeout=timeout)

    def drain(self, wait: float = 0.5) -> list[Message]:
        """Messages received so far, waiting ``wait`` seconds for stragglers."""
        out: list[Message] = []
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(remaining, 0.01)))
            except queue.Empty:
                if remaining <= 0:
                    return out

    def wait_message(self, timeout: float = 5.0, topic: str | None = None) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.messages.get(timeout=max(deadline - time.monotonic(), 0.01))
            if topic is None or msg.topic == topic:
                return msg

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


class ConnectRefused(AssertionError):
    def __init__(self, reason: Any) -> None:
        super().__init__(f"CONNECT refused: {reason}")
        self.reason = reason


def connect(
    port: int,
    username: str | None,
    password: str | bytes | None,
    client_id: str,
    *,
    protocol: int = V5,
    transport: str = "tcp",
    clean: bool = True,
    session_expiry: int | None = None,
    will: tuple[str, bytes, int, bool] | None = None,
    timeout: float = 5.0,
) -> TestClient:
    """A connected TestClient, or ConnectRefused with the CONNACK reason."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        transport=transport,  # type: ignore[arg-type]
        clean_session=clean if protocol != V5 else None,
        reconnect_on_failure=False,
    )
    tc = TestClient(c, client_id)
    result: queue.Queue[Any] = queue.Queue()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.put(reason)

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        tc.messages.put(Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))

    def on_disconnect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        tc.disconnect_reasons.append(reason)
        tc.disconnected.set()
        result.put(reason)

    c.on_connect = on_connect
    c.on_message = on_message
    c.on_disconnect = on_disconnect
    if transport == "websockets":
        c.ws_set_options(path="/mqtt")
    if username is not None:
        c.username_pw_set(username, password)
    if will:
        c.will_set(will[0], will[1], qos=will[2], retain=will[3])
    props = None
    if protocol == V5:
        props = Properties(PacketTypes.CONNECT)
        if session_expiry is not None:
            props.SessionExpiryInterval = session_expiry
    c.connect(
        "127.0.0.1",
        port,
        keepalive=30,
        clean_start=clean if protocol == V5 else 3,
        properties=props,
    )
    c.loop_start()
    try:
        reason = result.get(timeout=timeout)
    except queue.Empty:
        c.loop_stop()
        raise AssertionError(f"no CONNACK within {timeout}s") from None
    if reason.is_failure:
        c.loop_stop()
        raise ConnectRefused(reason)
    return tc


def refused(
    port: int, username: str | None, password: str | bytes | None, client_id: str, **kw: Any
) -> bool:
    """True when the broker refuses this CONNECT (and closes the connection)."""
    try:
        tc = connect(port, username, password, client_id, **kw)
    except ConnectRefused:
        return True
    tc.close()
    return False


# --------------------------------------------------------------------------- raw packets


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def connect_packet(
    client_id: str | bytes,
    username: str | bytes | None,
    password: str | bytes | None,
    *,
    version: int = 4,
    clean: bool = True,
    keepalive: int = 30,
    will: tuple[str, bytes, int, bool] | None = None,
) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += (_varint(0) if version == 5 else b"") + _str(topic) + _str(message)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    var = _str("MQTT") + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == 5:
        var += _varint(0)
    body = var + payload
    return bytes([0x10]) + _varint(len(body)) + body


def subscribe_packet(
    mid: int, filters: list[str | bytes], *, version: int = 4, qos: int = 1
) -> bytes:
    body = struct.pack("!H", mid)
    if version == 5:
        body += _varint(0)
    for f in filters:
        body += _str(f) + bytes([qos])
    return bytes([0x82]) + _varint(len(body)) + body


def publish_packet(
    topic: str | bytes,
    payload: bytes,
    *,
    mid: int = 1,
    qos: int = 1,
    retain: bool = False,
    version: int = 4,
) -> bytes:
    body = _str(topic)
    if qos:
        body += struct.pack("!H", mid)
    if version == 5:
        body += _varint(0)
    body += payload
    return bytes([0x30 | (qos << 1) | int(retain)]) + _varint(len(body)) + body


class RawClient:
    """A TCP socket speaking MQTT packets byte by byte."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            buf += chunk
        return buf

    def read_packet(self) -> tuple[int, bytes]:
        """(first byte, body); ConnectionError when the broker closed the connection."""
        first = self._read_exact(1)[0]
        mult, length = 1, 0
        while True:
            b = self._read_exact(1)[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return first, self._read_exact(length)

    def connack(self) -> int:
        """The CONNACK return code (3.1.1) or reason code (5)."""
        first, body = self.read_packet()
        assert first == 0x20, f"expected CONNACK, got packet 0x{first:02x}"
        return body[1]

    def suback(self, version: int = 4) -> list[int]:
        first, body = self.read_packet()
        assert first == 0x90, f"expected SUBACK, got packet 0x{first:02x}"
        pos = 2
        if version == 5:
            plen, pos = _read_varint(body, pos)
            pos += plen
        return list(body[pos:])

    def closed(self, timeout: float = 2.0) -> bool:
        """True when the broker closes the connection within ``timeout`` (data is skipped)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(4096):
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    mult, value = 1, 0
    while True:
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return value, pos


def raw_connect(
    port: int,
    client_id: str | bytes,
    username: str | bytes | None,
    password: str | bytes | None,
    *,
    version: int = 4,
    clean: bool = True,
) -> tuple[int | None, RawClient]:
    """Sends CONNECT; returns (CONNACK code or None if the broker just closed, client)."""
    rc = RawClient(port)
    rc.send(connect_packet(client_id, username, password, version=version, clean=clean))
    try:
        return rc.connack(), rc
    except ConnectionError:
        return None, rc
