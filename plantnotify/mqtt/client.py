"""``MqttClient``: one paho client, one thread, an explicit reconnect loop."""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from plantnotify.mqtt.errors import (
    MqttConnectError,
    MqttError,
    MqttNotConnected,
    MqttPublishError,
    MqttSubscribeError,
    MqttTimeout,
)
from plantnotify.mqtt.types import ConnectionState, ConnectOptions, Message

log = logging.getLogger("plantnotify.mqtt")


READ_AHEAD = 65536  # bytes read from a plain TCP socket per recv
DRAIN_PACKETS = 512  # packets read from the read-ahead buffer between two select() calls


class _ReadAhead:
    """A plain TCP socket whose ``recv`` reads up to ``READ_AHEAD`` bytes at a time and serves
    paho's small reads (one byte of packet type, the length bytes, then the body) from a buffer.

    paho reads every packet with three or four ``recv`` calls and one ``select``: each a system
    call that lets go of the GIL, and each a wait of up to the interpreter's switch interval
    (5 ms) to get it back while another thread of the process computes. A service that takes in
    thousands of messages a second beside busy threads (the bridge) spent its MQTT thread
    waiting for the GIL. ``pending`` tells paho (and :meth:`MqttClient._service`) that whole
    packets may already be buffered."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = bytearray()

    def recv(self, bufsize: int) -> bytes:
        if not self._buf:
            data = self._sock.recv(max(bufsize, READ_AHEAD))
            if len(data) <= bufsize:
                return bytes(data)
            self._buf += data
        out = bytes(self._buf[:bufsize])
        del self._buf[:bufsize]  # deleting a bytearray's head is O(1) amortized
        return out

    def pending(self) -> int:
        return len(self._buf)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Paho(paho.Client):
    """paho with one writer at a time.

    paho takes a client that does not run ``loop_start()`` for a single-threaded one: a PUBLISH
    is written from the caller's thread at once, while this client's own thread, woken by
    paho's socket pair, writes from the same packet queue in ``loop()``. Unserialized, the two
    threads pop that queue and send concurrently, and a later PUBLISH can reach the broker
    first: a retained message could go back to an older event. The lock keeps the caller's
    direct write (no hand-over to the client thread on the latency path) and makes the queue's
    order the wire's order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock = threading.Lock()

    def _packet_write(self) -> MQTTErrorCode:
        with self._write_lock:
            return super()._packet_write()

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._transport == "tcp" and not self._ssl:
            return _ReadAhead(sock)
        return sock


class _Ack:
    """Completion of one acknowledged operation (PUBACK or SUBACK)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: MqttError | None = None
        self.acked_ns = 0  # CLOCK_MONOTONIC when the acknowledgement (or failure) was read

    def _resolve(self, error: MqttError | None = None) -> None:
        if not self._done.is_set():
            self.acked_ns = time.monotonic_ns()
            self._error = error
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> None:
        """Block until acknowledged; raise the failure, or ``MqttTimeout``."""
        if not self._done.wait(timeout):
            raise MqttTimeout(f"no acknowledgement within {timeout} s")
        if self._error is not None:
            raise self._error


class PublishHandle(_Ack):
    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic


class SubscribeHandle(_Ack):
    def __init__(self, filters: list[str]) -> None:
        super().__init__()
        self.filters = filters


def _reason_name(code: ReasonCode | int) -> str:
    return code.getName() if isinstance(code, ReasonCode) else str(code)


def _is_failure(code: ReasonCode | int) -> bool:
    value = code.value if isinstance(code, ReasonCode) else int(code)
    return value >= 0x80


class MqttClient:
    """A long-lived MQTT connection.

    Messages go to ``on_message`` (called on the client's thread: hand them over, don't block)
    or, without it, to an inbox read with :meth:`get_message` / :meth:`messages`.
    """

    def __init__(
        self,
        options: ConnectOptions,
        *,
        on_message: Callable[[Message], None] | None = None,
        on_state: Callable[[ConnectionState], None] | None = None,
        max_inflight: int = 100,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        """``on_settled``: called (on the client's thread: keep it short) whenever a publish
        handle completed, acknowledged or failed, so a caller can wait for that and for other
        things at once."""
        self._opts = options
        self._on_message = on_message
        self._on_state = on_state
        self._on_settled = on_settled
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._lock = threading.Lock()
        self._publishes: dict[int, PublishHandle] = {}
        self._subscribes: dict[int, SubscribeHandle] = {}
        # Acknowledgements that arrived before ``_track`` registered their handle.
        self._early_acks: dict[int, Any] = {}
        self._props_cache: dict[int, Properties] = {}
        self._subscriptions: dict[str, int] = dict(options.subscriptions)
        self._initial_sub: SubscribeHandle | None = None
        self._granted_once = False  # the configured subscriptions were granted on some connect
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._state = ConnectionState.DISCONNECTED
        self._last_error: MqttError | None = None
        self._credentials_expire: float | None = None
        self._thread: threading.Thread | None = None

        protocol = (
            MQTTProtocolVersion.MQTTv5 if options.protocol == 5 else MQTTProtocolVersion.MQTTv311
        )
        self._paho = _Paho(
            CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=protocol,
            transport=options.transport,
            clean_session=None if options.protocol == 5 else options.clean_start,
            reconnect_on_failure=False,
        )
        if options.transport == "websockets":
            self._paho.ws_set_options(path=options.ws_path)
        self._paho.max_inflight_messages_set(max_inflight)
        self._paho.max_queued_messages_set(0)
        self._paho.on_connect = self._handle_connect
        self._paho.on_disconnect = self._handle_disconnect
        self._paho.on_message = self._handle_message
        self._paho.on_publish = self._handle_publish
        self._paho.on_subscribe = self._handle_subscribe

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> MqttClient:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"mqtt-{self._opts.client_id}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> MqttClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def is_connected(self) -> bool:
        return self._state is ConnectionState.CONNECTED

    @property
    def last_error(self) -> MqttError | None:
        return self._last_error

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until connected and the configured subscriptions are granted.

        A refusal (bad credentials, a denied subscription) is raised at once; the reconnect
        loop keeps trying in the background all the same.
        """
        deadline = time.monotonic() + timeout
        while not self._ready.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if isinstance(self._last_error, MqttConnectError | MqttSubscribeError):
                raise self._last_error
            if time.monotonic() >= deadline:
                raise MqttTimeout(
                    f"not connected to {self._opts.host}:{self._opts.port} within {timeout} s"
                    + (f" (last error: {self._last_error})" if self._last_error else "")
                )

    # --- operations -----------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry: int | None = None,
    ) -> PublishHandle:
        """Send a PUBLISH; the handle completes on PUBACK (at once for QoS 0)."""
        if not self.is_connected:
            raise MqttNotConnected(f"not connected; cannot publish to {topic}")
        props = self._expiry_properties(expiry) if self._opts.protocol == 5 else None
        handle = PublishHandle(topic)
        # Never hold our lock while calling into paho: paho runs on_publish under its own
        # mutex, so the PUBACK may even be handled before we learn the message id.
        info = self._paho.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttNotConnected(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        self._track(self._publishes, info.mid, handle)
        return handle

    def _expiry_properties(self, expiry: int | None) -> Properties | None:
        """PUBLISH properties carrying a message expiry; cached, paho builds them slowly."""
        if expiry is None:
            return None
        seconds = max(1, int(expiry))
        props = self._props_cache.get(seconds)
        if props is None:
            if len(self._props_cache) > 256:
                self._props_cache.clear()
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = seconds
            self._props_cache[seconds] = props
        return props

    def _track(self, table: dict[int, Any], mid: int, handle: _Ack) -> None:
        with self._lock:
            early = self._early_acks.pop(mid, None)
            if early is None:
                table[mid] = handle
        if early is not None:
            self._complete(handle, early)

    def subscribe(self, topic_filter: str, qos: int = 1) -> SubscribeHandle:
        """Add a subscription (kept across reconnects); the handle completes on SUBACK."""
        handle = SubscribeHandle([topic_filter])
        with self._lock:
            self._subscriptions[topic_filter] = qos
        if not self.is_connected:
            return handle  # sent with the others on the next CONNACK
        rc, mid = self._paho.subscribe(topic_filter, qos)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._track(self._subscribes, mid, handle)
        return handle

    def get_message(self, timeout: float | None = None) -> Message | None:
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def messages(self, timeout: float | None = None) -> Iterator[Message]:
        """Yield inbox messages until none arrives for ``timeout`` seconds."""
        while (msg := self.get_message(timeout)) is not None:
            yield msg

    # --- the connection loop (client thread) ----------------------------------------------

    def _run(self) -> None:
        delay = self._opts.reconnect_min_delay
        targets = [(self._opts.host, self._opts.port), *self._opts.failover]
        current = 0
        while not self._stop.is_set():
            self._set_state(ConnectionState.CONNECTING)
            host, port = targets[current]
            try:
                self._connect(host, port)
            except (OSError, ValueError) as exc:
                self._last_error = MqttNotConnected(
                    f"cannot reach the broker at {host}:{port}: {exc}"
                )
                current = (current + 1) % len(targets)  # a cluster: try the next node
                if current:
                    delay = self._opts.reconnect_min_delay
                log.warning("mqtt connect failed: %s; retrying in %.1fs", exc, delay)
            else:
                refreshed = self._service()
                if refreshed:
                    delay = 0.0
            self._connection_lost()
            if self._stop.is_set():
                break
            self._stop.wait(delay * random.uniform(0.8, 1.2))
            delay = min(
                max(delay * 2, self._opts.reconnect_min_delay), self._opts.reconnect_max_delay
            )
        self._set_state(ConnectionState.DISCONNECTED)

    def _connect(self, host: str, port: int) -> None:
        creds = self._opts.credentials()
        self._credentials_expire = creds.expires_at
        self._paho.username_pw_set(creds.username, creds.password)
        props = None
        if self._opts.protocol == 5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._opts.session_expiry
        self._paho.connect(
            host,
            port,
            keepalive=self._opts.keepalive,
            clean_start=self._opts.clean_start
            if self._opts.protocol == 5
            else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )

    def _service(self) -> bool:
        """Run the socket until it drops or we stop; True when we left to refresh credentials."""
        refreshing = False
        while True:
            rc = self._paho.loop(timeout=0.05)
            # Whole packets already read ahead: handled without a select() each (loop() takes
            # one packet per call when nothing is in flight, as for QoS 0 subscriptions).
            sock = self._paho.socket()
            drained = 0
            while (
                rc == MQTTErrorCode.MQTT_ERR_SUCCESS
                and isinstance(sock, _ReadAhead)
                and sock.pending()
                and drained < DRAIN_PACKETS
            ):
                rc = self._paho.loop_read()
                drained += 1
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return refreshing
            if self._stop.is_set() and not refreshing:
                refreshing = True
                self._paho.disconnect()
                continue
            expire = self._credentials_expire
            if (
                not refreshing
                and self.is_connected
                and expire is not None
                and time.time() >= expire - self._opts.refresh_margin
            ):
                log.info("mqtt credentials expire soon; reconnecting with fresh ones")
                refreshing = True
                self._paho.disconnect()

    def _connection_lost(self) -> None:
        self._ready.clear()
        with self._lock:
            pending = list(self._publishes.values()) + list(self._subscribes.values())
            self._publishes.clear()
            self._subscribes.clear()
            self._early_acks.clear()
            self._initial_sub = None
        for handle in pending:
            handle._resolve(MqttPublishError("connection lost before the acknowledgement"))
        if pending:
            self._settled()
        with contextlib.suppress(Exception):
            self._paho.socket() and self._paho.disconnect()
        self._set_state(ConnectionState.DISCONNECTED)

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                log.exception("mqtt state callback failed")

    # --- paho callbacks: hand results over, nothing more ----------------------------------

    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._last_error = MqttConnectError(_reason_name(reason), reason.value)
            log.warning("mqtt connection refused: %s", _reason_name(reason))
            return
        self._last_error = None
        with self._lock:
            subs = list(self._subscriptions.items())
        if (
            self._opts.protocol == 4
            and (self._granted_once or not self._opts.clean_start)
            and getattr(flags, "session_present", False)
        ):
            # MQTT 3.1.1 has no Retain Handling: the session kept these subscriptions (granted
            # earlier by this client, or by the process that used this client id before us: a
            # restarted service with a stable name), and subscribing again would replay every
            # retained message (each start of the bridge was sent every retained event).
            subs = [(f, q) for f, q in subs if f not in self._opts.no_retained_replay]
        self._state = ConnectionState.CONNECTED
        if subs:
            rc, mid = client.subscribe(self._subscribe_args(subs))
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                handle = SubscribeHandle([f for f, _ in subs])
                self._initial_sub = handle
                self._track(self._subscribes, mid, handle)
        else:
            self._ready.set()
        if self._on_state is not None:
            try:
                self._on_state(ConnectionState.CONNECTED)
            except Exception:
                log.exception("mqtt state callback failed")

    def _subscribe_args(self, subs: list[tuple[str, int]]) -> list[tuple[str, Any]]:
        skip = self._opts.no_retained_replay
        if self._opts.protocol != 5 or not skip:
            return list(subs)
        return [
            (f, SubscribeOptions(qos=q, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
            if f in skip
            else (f, q)
            for f, q in subs
        ]

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.info("mqtt disconnected: %s", _reason_name(reason))

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        expiry = None
        if msg.properties is not None and hasattr(msg.properties, "MessageExpiryInterval"):
            expiry = int(msg.properties.MessageExpiryInterval)
        message = Message(
            topic=msg.topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            retain=bool(msg.retain),
            expiry=expiry,
        )
        if self._on_message is None:
            self._inbox.put(message)
            return
        try:
            self._on_message(message)
        except Exception:
            log.exception("mqtt message handler failed for topic %s", msg.topic)

    def _handle_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        self._acknowledged(self._publishes, mid, reason)
        self._settled()

    def _settled(self) -> None:
        if self._on_settled is not None:
            try:
                self._on_settled()
            except Exception:
                log.exception("mqtt settled callback failed")

    def _handle_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        self._acknowledged(self._subscribes, mid, reasons)

    def _acknowledged(self, table: dict[int, Any], mid: int, result: Any) -> None:
        with self._lock:
            handle = table.pop(mid, None)
            if handle is None:
                self._early_acks[mid] = result
                return
        self._complete(handle, result)

    def _complete(self, handle: _Ack, result: Any) -> None:
        if isinstance(handle, SubscribeHandle):
            codes = result if isinstance(result, list) else [result]
            refused = [
                (flt, _reason_name(code))
                for flt, code in zip(handle.filters, codes, strict=False)
                if _is_failure(code)
            ]
            if refused:
                error = MqttSubscribeError(refused)
                log.error("%s", error)
                self._last_error = error
                handle._resolve(error)
                return
            handle._resolve()
            if handle is self._initial_sub:
                self._granted_once = True
                self._ready.set()
        elif isinstance(handle, PublishHandle):
            if _is_failure(result):
                handle._resolve(
                    MqttPublishError(
                        f"broker refused publish to {handle.topic}: {_reason_name(result)}"
                    )
                )
            else:
                handle._resolve()
