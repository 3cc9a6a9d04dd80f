"""Publisher agent: one MQTT connection publishing events at a fixed rate.

For the broker-level measurements (plain Mosquitto, our plugin broker, amqtt): the same lean
client, payloads and pacing for every broker, so only the broker differs. Each message is a
real ``AnalysisCompleted`` event (~400 bytes), retained, QoS 1, on
``users/{userId}/analyses/{key}``, like the worker's outbox publishes. A blocking socket and
``time.sleep`` pacing (nanosecond timers, unlike an event loop's millisecond ones); a reader
thread counts the PUBACKs.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from bench import mqttwire as w
from bench.agent import serve
from plantnotify.contracts.events import AnalysisCompleted
from plantnotify.contracts.topics import analysis_topic

_sock: socket.socket | None = None
_protocol = 5
_acked = 0
_acked_lock = threading.Lock()


def _reader(sock: socket.socket) -> None:
    global _acked
    reader = w.PacketReader()
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        n = sum(1 for ptype, _, _ in reader.feed(data) if ptype == w.PUBACK)
        if n:
            with _acked_lock:
                _acked += n


def connect(args: dict[str, Any]) -> dict[str, Any]:
    global _sock, _protocol
    _protocol = int(args.get("protocol", 5))
    sock = socket.create_connection((args.get("host", "127.0.0.1"), int(args["port"])), 10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(
        w.connect_packet(args["client_id"], args["username"], args["password"], 900, _protocol)
    )
    reader = w.PacketReader()
    while True:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("broker closed the connection before CONNACK")
        packets = list(reader.feed(data))
        if packets:
            ptype, _, body = packets[0]
            if ptype != w.CONNACK:
                raise w.ProtocolError(f"expected CONNACK, got packet type {ptype}")
            code = w.connack_code(body)
            if code != w.CONNACK_ACCEPTED:
                raise ConnectionRefusedError(w.CONNACK_REASONS.get(code, hex(code)))
            break
    sock.settimeout(None)
    _sock = sock
    threading.Thread(target=_reader, args=(sock,), daemon=True).start()
    return {}


def event_payload(user_id: str, key: str) -> bytes:
    return AnalysisCompleted(
        analysis_id=key,
        user_id=user_id,
        crop_type="tomato",
        primary_concern="Early blight (Alternaria solani) on lower leaves",
        overall_health_score=72,
        image_url=f"http://127.0.0.1:8000/api/v1/plantanalyses/{key}/image",
    ).to_json_bytes()


def run(args: dict[str, Any]) -> dict[str, Any]:
    """Publish ``count`` events at ``rate``/s round-robin over ``users``; wait for PUBACKs."""
    global _acked
    assert _sock is not None, "connect first"
    users: list[str] = args["users"]
    rate = float(args["rate"])
    count = int(args["count"])
    prefix = str(args.get("key_prefix", "k"))
    retain = bool(args.get("retain", True))
    packets = []
    for i in range(count):
        user = users[i % len(users)]
        key = f"{prefix}{i}"
        packets.append(
            (
                key,
                w.publish_packet(
                    analysis_topic(user, key),
                    event_payload(user, key),
                    qos=1,
                    retain=retain,
                    packet_id=i % 65535 + 1,
                    protocol=_protocol,
                ),
            )
        )
    with _acked_lock:
        _acked = 0
    sent: dict[str, int] = {}
    lags: list[float] = []
    interval = 1e9 / rate
    start = time.monotonic_ns()
    i = 0
    while i < count:
        now = time.monotonic_ns()
        due = start + int(i * interval)
        if due > now:
            time.sleep((due - now) / 1e9)
            continue
        # Send everything that is due (catches up after a late wake-up).
        batch = []
        while i < count and start + int(i * interval) <= now:
            key, packet = packets[i]
            lags.append((now - (start + int(i * interval))) / 1e6)
            sent[key] = now
            batch.append(packet)
            i += 1
        _sock.sendall(b"".join(batch))
    elapsed = (time.monotonic_ns() - start) / 1e9
    deadline = time.monotonic() + float(args.get("ack_wait", 30))
    while _acked < count and time.monotonic() < deadline:
        time.sleep(0.005)
    lags.sort()
    return {
        "sent": sent,
        "seconds": elapsed,
        "offered_rate": rate,
        "achieved_rate": count / elapsed if elapsed > 0 else None,
        "unacked": count - _acked,
        "schedule_lag_p99_ms": round(lags[int(len(lags) * 0.99)], 3) if lags else None,
    }


def blast_mqttclient(args: dict[str, Any]) -> dict[str, Any]:
    """``count`` events through the project's own MqttClient, as the worker's outbox sends
    them (retained, QoS 1, MQTT 5 expiry, up to 1,000 in flight), as fast as it goes: the
    ceiling of one worker's MQTT side, without the database."""
    from plantnotify.mqtt import ConnectOptions, Credentials, MqttClient

    creds = Credentials(args["username"], args["password"])
    client = MqttClient(
        ConnectOptions(
            host=args.get("host", "127.0.0.1"),
            port=int(args["port"]),
            client_id=args["client_id"],
            credentials=lambda: creds,
        ),
        max_inflight=1000,
    ).start()
    client.wait_connected(30)
    users: list[str] = args["users"]
    prefix, count = str(args["key_prefix"]), int(args["count"])
    jobs = []
    for i in range(count):
        user, key = users[i % len(users)], f"{prefix}{i}"
        jobs.append((analysis_topic(user, key), event_payload(user, key)))
    start = time.monotonic_ns()
    handles = [client.publish(t, p, qos=1, retain=True, expiry=3600) for t, p in jobs]
    for handle in handles:
        handle.wait(60)
    end = time.monotonic_ns()
    client.stop()
    return {"start_ns": start, "end_ns": end, "events_per_s": count / ((end - start) / 1e9)}


def quit_(args: dict[str, Any]) -> dict[str, Any]:
    if _sock is not None:
        try:
            _sock.sendall(w.DISCONNECT)
        finally:
            _sock.close()
    return {}


if __name__ == "__main__":
    serve({"connect": connect, "run": run, "blast_mqttclient": blast_mqttclient, "quit": quit_})
