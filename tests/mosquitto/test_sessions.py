"""Session events for the bridge: a SessionSnapshot per change (never retained), the whole
picture on request, BrokerBoot per start.

Semantics checked here (the bridge relies on them):
- every change of a user's live client ids yields a snapshot with a higher ``seq``;
- a take-over (same client id) never shows the user offline, not even briefly;
- the broker keeps nothing per user: snapshots are not retained, and a user's last connection
  going ends in an offline snapshot; a late service asks for the whole picture
  (``$CONTROL/plantnotify/sessions``) and gets every online user, in a few parts sent to it
  alone, however many users are online (more than the 1,000 a retained replay got through);
- after a restart (SIGTERM or SIGKILL) a new boot id is announced and snapshots carrying the
  old one are stale;
- a connection that fails right after a successful BASIC_AUTH leaves no live connection.
"""

from __future__ import annotations

import base64
import os
import queue
import socket
import struct
import time
from collections.abc import Callable

import pytest

from plantnotify.contracts.events import (
    BrokerBoot,
    SessionChanges,
    SessionSnapshot,
    SessionsPicture,
)
from plantnotify.contracts.topics import (
    ALL_SESSIONS_FILTER,
    BROKER_BOOT_TOPIC,
    BROKER_SESSION_CHANGES_TOPIC,
    BROKER_SESSIONS_TOPIC,
    SESSIONS_REQUEST_TOPIC,
    analysis_topic,
    parse_topic,
    session_topic,
    user_filter,
)
from tests.support.broker import BrokerFactory, BrokerHandle
from tests.support.mqtt import ConnectRefused, RawClient, TestClient, connect, connect_packet


class SessionWatcher:
    """A service client that collects BrokerBoot and SessionSnapshot events."""

    def __init__(self, broker: BrokerHandle, name: str) -> None:
        self.client = connect(broker.port, name, broker.token(name, service=True), name)
        assert self.client.subscribe(BROKER_BOOT_TOPIC) == [1]
        assert self.client.subscribe(ALL_SESSIONS_FILTER) == [1]
        assert self.client.subscribe(BROKER_SESSION_CHANGES_TOPIC) == [1]
        self.changes: list[SessionChanges] = []  # every TICK's snapshots, one message each
        self.boots: list[BrokerBoot] = []
        self.snapshots: list[SessionSnapshot] = []
        self.deleted: list[str] = []  # empty payloads on a session topic (there must be none)
        self.retained: list[SessionSnapshot] = []  # snapshots that came as retained (none)
        self.parts: list[SessionsPicture] = []  # picture parts sent to this client

    def _pump(self, timeout: float) -> None:
        try:
            msg = self.client.messages.get(timeout=timeout)
        except queue.Empty:
            return
        if msg.topic == BROKER_BOOT_TOPIC:
            self.boots.append(BrokerBoot.model_validate_json(msg.payload))
        elif msg.topic == BROKER_SESSIONS_TOPIC:
            self.parts.append(SessionsPicture.model_validate_json(msg.payload))
        elif msg.topic == BROKER_SESSION_CHANGES_TOPIC:
            self.changes.append(SessionChanges.model_validate_json(msg.payload))
        else:
            ref = parse_topic(msg.topic)
            assert ref is not None and ref.kind == "session"
            if not msg.payload:
                self.deleted.append(ref.user_id)
                return
            snap = SessionSnapshot.model_validate_json(msg.payload)
            assert ref.user_id == snap.user_id
            self.snapshots.append(snap)
            if msg.retain:
                self.retained.append(snap)

    def boot(self, timeout: float = 5.0) -> BrokerBoot:
        deadline = time.monotonic() + timeout
        while not self.boots and time.monotonic() < deadline:
            self._pump(0.05)
        assert self.boots, "no retained BrokerBoot"
        return self.boots[-1]

    def picture(self, request: str, timeout: float = 10.0) -> list[SessionsPicture]:
        """Ask for the whole picture and collect every part of the answer."""
        self.client.publish(SESSIONS_REQUEST_TOPIC, request.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mine = [p for p in self.parts if p.request_id == request]
            if mine and len(mine) == mine[0].parts:
                return sorted(mine, key=lambda p: p.part)
            self._pump(0.05)
        raise AssertionError(f"no whole picture for {request}; got {len(self.parts)} part(s)")

    def of(self, user: str) -> list[SessionSnapshot]:
        return [s for s in self.snapshots if s.user_id == user]

    def wait(
        self, user: str, check: Callable[[SessionSnapshot], bool], timeout: float = 5.0
    ) -> SessionSnapshot:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mine = self.of(user)
            if mine and check(mine[-1]):
                return mine[-1]
            self._pump(0.05)
        raise AssertionError(f"no matching snapshot for {user}; got {self.of(user)}")

    def settle(self, wait: float = 0.5) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self._pump(0.05)

    def close(self) -> None:
        self.client.close()


def _ids(*ids: str) -> Callable[[SessionSnapshot], bool]:
    return lambda s: s.connections == len(ids) and s.client_ids == sorted(ids)


def test_snapshots_follow_connect_disconnect_and_takeover(broker: BrokerHandle) -> None:
    user = "sess1"
    watcher = SessionWatcher(broker, "svc-sess1")
    boot = watcher.boot()
    a = connect(broker.port, user, broker.token(user), f"{user}-a")
    first = watcher.wait(user, _ids(f"{user}-a"))
    b = connect(broker.port, user, broker.token(user), f"{user}-b")
    watcher.wait(user, _ids(f"{user}-a", f"{user}-b"))

    seen = len(watcher.of(user))
    a2 = connect(broker.port, user, broker.token(user), f"{user}-a")  # take-over
    assert a.disconnected.wait(3)
    watcher.settle(0.6)
    after = watcher.of(user)[seen:]
    assert after, "a take-over is announced"
    assert all(s.client_ids == [f"{user}-a", f"{user}-b"] for s in after), after

    b.close()
    watcher.wait(user, _ids(f"{user}-a"))
    a2.close()
    last = watcher.wait(user, _ids())
    watcher.settle(0.3)
    assert watcher.deleted == [], "nothing retained, so nothing to delete"
    assert watcher.retained == [], "snapshots are never retained"
    mine = watcher.of(user)
    assert [s.seq for s in mine] == sorted({s.seq for s in mine}), "seq strictly increases"
    assert all(s.boot_id == boot.boot_id for s in mine)
    assert first.at <= last.at
    # The same snapshots, in the same order, on the changes topic.
    changed = [c for m in watcher.changes for c in m.sessions if c.user_id == user]
    assert changed == mine
    assert all(m.boot_id == boot.boot_id for m in watcher.changes)
    watcher.close()


def test_a_late_service_gets_the_whole_picture_on_request(broker: BrokerHandle) -> None:
    user, gone = "sess2", "sess2gone"
    clients = [connect(broker.port, user, broker.token(user), f"{user}-{i}") for i in range(2)]
    g = connect(broker.port, gone, broker.token(gone), gone)
    g.close()
    time.sleep(0.5)  # a TICK or two
    late = SessionWatcher(broker, "svc-late")
    other = SessionWatcher(broker, "svc-other")
    try:
        boot = late.boot()
        late.settle(0.3)
        assert late.snapshots == [], "no snapshot is retained: a late subscriber gets none"
        parts = late.picture("req-1")
        assert [p.part for p in parts] == [1] and parts[0].parts == 1
        assert parts[0].boot_id == boot.boot_id
        named = {e.user_id: e for e in parts[0].sessions}
        assert gone not in named, "offline users are in no part"
        assert named[user].connections == 2
        assert named[user].client_ids == [f"{user}-0", f"{user}-1"]
        other.settle(0.3)
        assert other.parts == [], "the picture goes to the client that asked, only"
        # After the picture, changes come as snapshots newer than it.
        clients[0].close()
        snap = late.wait(user, _ids(f"{user}-1"))
        assert snap.seq > parts[0].seq
        # A user token may not ask.
        u = connect(broker.port, "sess2u", broker.token("sess2u"), "sess2u")
        u.publish(SESSIONS_REQUEST_TOPIC, b"req-u")
        late.settle(0.3)
        assert not [p for p in late.parts + other.parts if p.request_id == "req-u"]
        u.close()
    finally:
        for c in clients:
            c.close()
        late.close()
        other.close()


def test_the_picture_names_every_online_user_beyond_the_queue_limit(
    broker: BrokerHandle,
) -> None:
    """A retained replay got through ~1,020 snapshots (20 in flight + 1,000 queued); the
    picture is a few parts, whatever the number of users."""
    n = 1500
    late = SessionWatcher(broker, "svc-many")  # first: its socket stays below 1024 for select()
    socks: list[socket.socket] = []
    try:
        for i in range(n):
            raw = RawClient(broker.port)
            user = f"many{i}"
            raw.send(connect_packet(user, user, broker.token(user)))
            socks.append(raw.sock)
        for sock in socks:  # every CONNACK read: all of them are authenticated
            sock.settimeout(10)
            assert sock.recv(4)[:2] == b"\x20\x02"
        time.sleep(0.5)
        parts = late.picture("req-many", timeout=20)
        users = [e.user_id for p in parts for e in p.sessions]
        assert len(users) == len(set(users))
        assert {f"many{i}" for i in range(n)} <= set(users)
        assert 1 <= len(parts) <= 32
    finally:
        for sock in socks:
            sock.close()
        late.close()


def test_a_mass_disconnect_is_a_few_changes_messages(broker: BrokerHandle) -> None:
    """Hundreds of users leaving at once: every offline snapshot reaches a QoS-1 follower of
    the changes topic, in a few messages (one per TICK), not one message per user."""
    n = 600
    watcher = SessionWatcher(broker, "svc-mass")
    socks: list[socket.socket] = []
    try:
        for i in range(n):
            raw = RawClient(broker.port)
            user = f"mass{i}"
            raw.send(connect_packet(user, user, broker.token(user)))
            socks.append(raw.sock)
        for sock in socks:
            sock.settimeout(10)
            assert sock.recv(4)[:2] == b"\x20\x02"
        # Every user announced online first: a user who leaves before being announced is never
        # announced at all (nothing changed for the followers), so would not count below.
        deadline = time.monotonic() + 15
        online: set[str] = set()
        while time.monotonic() < deadline and len(online) < n:
            watcher.settle(0.2)
            online = {
                c.user_id
                for m in watcher.changes
                for c in m.sessions
                if c.connections == 1 and c.user_id.startswith("mass")
            }
        assert len(online) == n
        watcher.settle(0.3)
        before = len(watcher.changes)
        for sock in socks:
            _sigkill_rst(sock)
        socks.clear()
        deadline = time.monotonic() + 15
        offline: set[str] = set()
        while time.monotonic() < deadline and len(offline) < n:
            watcher.settle(0.2)
            offline = {
                c.user_id
                for m in watcher.changes[before:]
                for c in m.sessions
                if c.connections == 0 and c.user_id.startswith("mass")
            }
        assert len(offline) == n
        assert len(watcher.changes) - before <= n // 20, "one message per TICK, not per user"
    finally:
        for sock in socks:
            sock.close()
        watcher.close()


def _sigkill_rst(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _ws_connect_and_abort(port: int, packet: bytes) -> None:
    """MQTT over WebSocket by hand: upgrade, one CONNECT frame, then RST."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert b" 101 " in response.split(b"\r\n")[0], response
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(packet))
    assert len(packet) < 65536
    header = bytes([0x82]) + (
        bytes([0x80 | len(packet)])
        if len(packet) < 126
        else bytes([0x80 | 126]) + struct.pack("!H", len(packet))
    )
    sock.sendall(header + mask + masked)
    time.sleep(0.05)
    _sigkill_rst(sock)


def test_connections_failing_right_after_auth_leave_no_phantom(broker: BrokerHandle) -> None:
    user = "phantom1"
    limit = broker.settings.mqtt_max_connections_per_user
    watcher = SessionWatcher(broker, "svc-phantom")
    for i in range(limit + 3):
        # CONNECT and RST before reading the CONNACK.
        raw = RawClient(broker.port)
        raw.send(connect_packet(f"{user}-tcp{i}", user, broker.token(user)))
        _sigkill_rst(raw.sock)
        # CONNECT immediately followed by a malformed packet in the same segment.
        raw = RawClient(broker.port)
        raw.send(connect_packet(f"{user}-bad{i}", user, broker.token(user)) + b"\xf0\x00")
        assert raw.closed()
        raw.close()
        # The same over WebSocket.
        _ws_connect_and_abort(
            broker.ws_port, connect_packet(f"{user}-ws{i}", user, broker.token(user))
        )
    time.sleep(0.5)
    watcher.settle(0.3)
    if watcher.of(user):
        assert watcher.of(user)[-1].connections == 0, watcher.of(user)[-1]
    # None of them holds a slot: the full quota is available.
    clients = [connect(broker.port, user, broker.token(user), f"{user}-{i}") for i in range(limit)]
    try:
        watcher.wait(user, lambda s: s.connections == limit)
    finally:
        for c in clients:
            c.close()
    watcher.wait(user, _ids())
    watcher.close()


def _subscribed(broker: BrokerHandle, user: str, token: str) -> TestClient:
    c = connect(broker.port, user, token, f"{user}-phone")
    assert c.subscribe(user_filter(user)) == [1]
    return c


def test_expired_connection_is_kicked_within_seconds(broker_factory: BrokerFactory) -> None:
    b = broker_factory(mqtt_expiry_check_seconds=1, mqtt_leeway_seconds=0)
    user = "expiry1"
    watcher = SessionWatcher(b, "svc-expiry")
    ttl = 2
    c = _subscribed(b, user, b.token(user, ttl=ttl))
    exp = time.time() + ttl
    watcher.wait(user, _ids(f"{user}-phone"))
    assert c.disconnected.wait(ttl + 4), "expired connection still open"
    late = time.time() - int(exp)
    assert late <= 3.0, f"kicked {late:.1f}s after exp"
    watcher.wait(user, _ids())
    assert "token expired, disconnecting user=expiry1" in b.log_text()
    svc = connect(b.port, "svc-exp-pub", b.token("svc-exp-pub", service=True), "svc-exp-pub")
    svc.publish(analysis_topic(user, "after"), b"{}")
    assert [m for m in c.drain(0.3) if m.topic.endswith("/after")] == []
    svc.close()
    watcher.close()


def test_expired_connection_reads_nothing_even_before_the_kick(
    broker_factory: BrokerFactory,
) -> None:
    """READ is decided per delivery: with no kick due for an hour, nothing flows after exp."""
    b = broker_factory(mqtt_expiry_check_seconds=3600, mqtt_leeway_seconds=0)
    user = "expiry2"
    token = b.token(user, ttl=2)
    c = _subscribed(b, user, token)
    svc = connect(b.port, "svc-exp2", b.token("svc-exp2", service=True), "svc-exp2")
    try:
        svc.publish(analysis_topic(user, "before"), b"{}")
        assert [m.topic for m in c.drain(0.5)] == [analysis_topic(user, "before")]
        time.sleep(2.2)
        svc.publish(analysis_topic(user, "after"), b"{}")
        assert c.drain(0.5) == []
        assert not c.disconnected.is_set()  # still connected, just deaf
        with pytest.raises(ConnectRefused):  # and the token cannot be reused
            connect(b.port, user, token, f"{user}-again")
    finally:
        c.close()
        svc.close()


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
def test_restart_announces_a_new_boot_and_old_snapshots_are_stale(
    broker_factory: BrokerFactory, kill: bool
) -> None:
    b = broker_factory()
    user = "restart1"
    watcher = SessionWatcher(b, "svc-restart")
    boot1 = watcher.boot()
    c = connect(b.port, user, b.token(user), f"{user}-phone")
    watcher.wait(user, _ids(f"{user}-phone"))
    watcher.close()

    b.restart(kill=kill)

    watcher = SessionWatcher(b, "svc-restart")
    boot2 = watcher.boot()
    assert boot2.boot_id != boot1.boot_id
    assert boot2.started_at >= boot1.started_at
    watcher.settle(0.5)
    assert len(watcher.boots) == 1, "exactly one retained boot event: the current one"
    # Nothing of the previous boot survives: snapshots are not retained.
    assert all(s.boot_id == boot2.boot_id for s in watcher.of(user)), watcher.of(user)
    # The device reconnects; the new boot's snapshot is the truth again.
    assert c.disconnected.wait(5)
    c.client.loop_stop()
    c = connect(b.port, user, b.token(user), f"{user}-phone")
    snap = watcher.wait(user, lambda s: s.boot_id == boot2.boot_id and s.connections == 1)
    assert snap.client_ids == [f"{user}-phone"]
    c.close()
    watcher.close()


def test_session_topic_names_agree_with_the_contract() -> None:
    """The plugin spells the service topics in C; keep both in step."""
    source = (
        __import__("pathlib").Path(__file__).resolve().parents[2]
        / "mosquitto/plugin/plantnotify_plugin.c"
    ).read_text()
    assert f'#define BOOT_TOPIC "{BROKER_BOOT_TOPIC}"' in source
    assert f'#define SESSIONS_TOPIC_PREFIX "{session_topic("x")[:-1]}"' in source
    assert f'#define PICTURE_REQUEST_TOPIC "{SESSIONS_REQUEST_TOPIC}"' in source
    assert f'#define PICTURE_TOPIC "{BROKER_SESSIONS_TOPIC}"' in source
    assert f'#define CHANGES_TOPIC "{BROKER_SESSION_CHANGES_TOPIC}"' in source
