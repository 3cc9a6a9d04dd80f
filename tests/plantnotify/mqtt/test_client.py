"""plantnotify.mqtt against our real Mosquitto with the JWT plugin."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from plantnotify.contracts import topics
from plantnotify.contracts.ids import new_client_id
from plantnotify.mqtt import (
    ConnectionState,
    ConnectOptions,
    Credentials,
    MqttClient,
    MqttConnectError,
    MqttNotConnected,
    MqttPublishError,
    MqttSubscribeError,
)
from tests.support.net import wait_for


@pytest.fixture
def make_client(broker) -> Iterator[Callable[..., MqttClient]]:  # type: ignore[no-untyped-def]
    clients: list[MqttClient] = []

    def make(
        user_id: str,
        *,
        service: bool = False,
        subscriptions: list[tuple[str, int]] | None = None,
        credentials: Callable[[], Credentials] | None = None,
        broker_handle=None,  # type: ignore[no-untyped-def]
        refresh_margin: float = 30.0,
        no_retained_replay: frozenset[str] = frozenset(),
        **kw,  # type: ignore[no-untyped-def]
    ) -> MqttClient:
        b = broker_handle or broker
        creds = credentials or (lambda: Credentials(user_id, b.token(user_id, service=service)))
        options = ConnectOptions(
            host="127.0.0.1",
            port=b.port,
            client_id=new_client_id(user_id),
            credentials=creds,
            subscriptions=subscriptions or [],
            reconnect_max_delay=0.5,
            refresh_margin=refresh_margin,
            no_retained_replay=no_retained_replay,
        )
        client = MqttClient(options, **kw).start()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.stop()


def test_round_trip_with_expiry_and_retain(make_client) -> None:  # type: ignore[no-untyped-def]
    topic = topics.analysis_topic("mq-alice", "a1")
    alice = make_client("mq-alice", subscriptions=[(topics.user_filter("mq-alice"), 1)])
    alice.wait_connected(5)
    service = make_client("svc-test", service=True)
    service.wait_connected(5)

    service.publish(topic, b'{"x":1}', retain=True, expiry=3600).wait(5)

    msg = wait_for(lambda: alice.get_message(0.1), 5, what="event at alice")
    assert msg.topic == topic and msg.payload == b'{"x":1}' and msg.qos == 1
    assert msg.expiry is not None and 3590 <= msg.expiry <= 3600

    late = make_client("mq-alice", subscriptions=[(topics.analyses_filter("mq-alice"), 1)])
    late.wait_connected(5)
    replay = wait_for(lambda: late.get_message(0.1), 5, what="retained replay")
    assert replay.retain and replay.payload == b'{"x":1}'


def test_no_retained_replay_skips_retained_but_not_new_messages(make_client) -> None:  # type: ignore[no-untyped-def]
    old_topic = topics.analysis_topic("mq-ivan", "old")
    service = make_client("svc-test", service=True)
    service.wait_connected(5)
    service.publish(old_topic, b'{"old":1}', retain=True).wait(5)

    follower = make_client(
        "svc-follow",
        service=True,
        subscriptions=[(topics.ALL_ANALYSES_FILTER, 1)],
        no_retained_replay=frozenset({topics.ALL_ANALYSES_FILTER}),
    )
    follower.wait_connected(5)
    plain = make_client("mq-ivan", subscriptions=[(topics.analyses_filter("mq-ivan"), 1)])
    plain.wait_connected(5)
    assert wait_for(lambda: plain.get_message(0.1), 5, what="replay").retain  # still replayed
    service.publish(topics.analysis_topic("mq-ivan", "new"), b'{"new":1}', retain=True).wait(5)

    got = wait_for(lambda: follower.get_message(0.1), 5, what="new event at the follower")
    assert got.payload == b'{"new":1}'
    assert follower.get_message(0.5) is None  # and the old one never came


def test_refused_connection_is_reported(make_client) -> None:  # type: ignore[no-untyped-def]
    bad = make_client("mq-bob", credentials=lambda: Credentials("mq-bob", "not-a-jwt"))
    with pytest.raises(MqttConnectError):
        bad.wait_connected(3)
    assert not bad.is_connected
    with pytest.raises(MqttNotConnected):
        bad.publish(topics.receipts_topic("mq-bob"), b"{}")


def test_refused_subscription_is_reported(make_client) -> None:  # type: ignore[no-untyped-def]
    nosy = make_client("mq-carol", subscriptions=[(topics.user_filter("mq-dave"), 1)])
    with pytest.raises(MqttSubscribeError) as info:
        nosy.wait_connected(5)
    assert info.value.refused[0][0] == "users/mq-dave/#"


def test_refused_publish_fails_its_handle(make_client) -> None:  # type: ignore[no-untyped-def]
    erin = make_client("mq-erin")
    erin.wait_connected(5)
    # Users may only publish receipts; their own analyses topic is the server's.
    with pytest.raises(MqttPublishError):
        erin.publish(topics.analysis_topic("mq-erin", "x"), b"forged").wait(5)
    erin.publish(topics.receipts_topic("mq-erin"), b'{"eventId":"e"}').wait(5)


def test_reconnects_and_resubscribes_after_broker_restart(  # type: ignore[no-untyped-def]
    broker_factory, make_client
) -> None:
    own = broker_factory()
    states: list[ConnectionState] = []
    frank = make_client(
        "mq-frank",
        subscriptions=[(topics.user_filter("mq-frank"), 1)],
        broker_handle=own,
        on_state=states.append,
    )
    frank.wait_connected(5)
    own.restart(kill=True)
    wait_for(lambda: ConnectionState.DISCONNECTED in states, 10, what="disconnect seen")
    frank.wait_connected(15)
    service = make_client("svc-test", service=True, broker_handle=own)
    service.wait_connected(5)
    service.publish(topics.analysis_topic("mq-frank", "after"), b"again").wait(5)
    msg = wait_for(lambda: frank.get_message(0.1), 5, what="message after restart")
    assert msg.payload == b"again"
    assert states.count(ConnectionState.CONNECTED) >= 2


def test_reconnects_with_fresh_credentials_before_expiry(broker, make_client) -> None:  # type: ignore[no-untyped-def]
    issued: list[float] = []
    lock = threading.Lock()

    def credentials() -> Credentials:
        with lock:
            issued.append(time.time())
        # Valid for 60 s, but declared to expire in 1.5 s: the client must renew early.
        return Credentials("mq-gina", broker.token("mq-gina", ttl=60), expires_at=time.time() + 1.5)

    gina = make_client("mq-gina", credentials=credentials, refresh_margin=1.0)
    gina.wait_connected(5)
    wait_for(lambda: len(issued) >= 3, 10, what="two credential refreshes")
    gina.wait_connected(5)
    gina.publish(topics.receipts_topic("mq-gina"), b'{"eventId":"e"}').wait(5)


def test_read_ahead_serves_small_reads_from_one_recv() -> None:
    """paho's one-byte reads of a packet come from one read-ahead, whole or short."""
    from plantnotify.mqtt.client import _ReadAhead

    class Sock:
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks, self.calls = chunks, 0

        def recv(self, n: int) -> bytes:
            self.calls += 1
            if not self.chunks:
                raise BlockingIOError
            return self.chunks.pop(0)

        def fileno(self) -> int:
            return 7

    sock = Sock([b"\x30\x05hello\x30", b"\x02hi"])
    ra = _ReadAhead(sock)
    assert ra.fileno() == 7  # everything else is the socket's
    assert [ra.recv(1), ra.recv(1), ra.recv(5)] == [b"\x30", b"\x05", b"hello"]
    assert ra.pending() == 1 and sock.calls == 1
    assert ra.recv(1) == b"\x30" and ra.pending() == 0
    assert ra.recv(1) == b"\x02" and ra.recv(10) == b"hi"  # a short read, as a socket's
    assert sock.calls == 2
    try:
        ra.recv(1)
    except BlockingIOError:
        pass
    else:
        raise AssertionError("an empty non-blocking socket must still raise")


def test_publishes_from_other_threads_reach_the_wire_one_at_a_time_in_order(
    make_client, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """paho writes a PUBLISH from the thread that publishes and from the client's own thread
    (woken to write too); unserialized, both pop paho's packet queue and send at once, and a
    later PUBLISH can reach the broker first (a retained event going back to an older one, seen
    once in CI as an analysis' two progress events swapped on the phone). Each send here is
    slowed down to widen that window: never two sends at once, and the order is kept."""
    from plantnotify.mqtt.client import _ReadAhead

    lock = threading.Lock()
    active: dict[int, int] = {}  # sends in progress, per socket
    most = [0]
    real_getattr = _ReadAhead.__getattr__

    def send(self: _ReadAhead, data: bytes) -> int:
        with lock:
            active[id(self)] = active.get(id(self), 0) + 1
            most[0] = max(most[0], active[id(self)])
        try:
            time.sleep(0.0005)
            sent: int = real_getattr(self, "send")(data)
            return sent
        finally:
            with lock:
                active[id(self)] -= 1

    topic = topics.analysis_topic("mq-olga", "ordered")
    olga = make_client("mq-olga", subscriptions=[(topics.analyses_filter("mq-olga"), 1)])
    olga.wait_connected(5)
    service = make_client("svc-order", service=True)
    service.wait_connected(5)
    monkeypatch.setattr(_ReadAhead, "send", send, raising=False)

    count = 300

    def publish_all() -> None:
        handles = [service.publish(topic, str(i).encode(), retain=True) for i in range(count)]
        for h in handles:
            h.wait(10)

    publisher = threading.Thread(target=publish_all, name="publisher")
    publisher.start()
    publisher.join(60)
    assert not publisher.is_alive()
    monkeypatch.undo()

    assert most[0] == 1, "two threads wrote to one socket at once"
    got = [int(m.payload) for m in olga.messages(timeout=1.0)]
    assert got == list(range(count))
