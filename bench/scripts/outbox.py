"""Outbox and delivery benchmark (not part of the test suite; prints numbers).

    .venv/bin/python -m bench.scripts.outbox [--events 5000] [--analyses 200]

1. **Outbox throughput**: N Completed events committed in PostgreSQL, then the outbox publisher
   started; time until every row is marked published (PUBACK seen). Baseline in the same run:
   the same N retained QoS-1 publishes straight from one MqttClient (no database).
2. **N8N answer -> event on a subscriber**: ``--analyses`` jobs through RabbitMQ and a
   ``plantnotify worker`` process; a fake N8N records when it sent each 200 and a user's
   subscriber when the AnalysisCompleted arrived. Baseline: publish -> receive on the same
   broker, no worker.

Uses its own PostgreSQL database, RabbitMQ vhost and Mosquitto (free ports); removes them after.

``plantnotify bench --scenario e2e_latency`` measures the commit -> device part at stepped rates
with devices on TCP and WebSocket; this script keeps the whole path from N8N's answer (through
RabbitMQ, the job, the result transaction) that the issue asks to be measured.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from devtools.fake_n8n import FakeN8n
from devtools.world import (
    Subscriber,
    event_rows,
    make_analysis,
    sessions_for,
    settings_env,
    with_overrides,
)
from plantnotify.amqp.publisher import JobPublisher
from plantnotify.broker.config import BrokerLayout, find_plugin
from plantnotify.broker.process import BrokerProcess
from plantnotify.contracts.events import AnalysisCompleted, EventType
from plantnotify.contracts.queues import AnalysisJob
from plantnotify.contracts.topics import analysis_topic
from plantnotify.db.session import drop_database, migrate
from plantnotify.logs import setup_logging
from plantnotify.mqtt import Message, MqttClient
from plantnotify.net import free_port
from plantnotify.service_mqtt import service_connect_options
from plantnotify.settings import Settings, load_settings
from worker.outbox import OutboxPublisher
from worker.store import add_event

ROOT = Path(__file__).resolve().parents[2]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


# --- set-up -----------------------------------------------------------------------------------


class Environment:
    def __init__(self) -> None:
        run = secrets.token_hex(3)
        self.database_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/plantnotify_bench_{run}"
        self.vhost = f"plantnotify_bench_{run}"
        self.tmp = Path(tempfile.mkdtemp(prefix="plantnotify-bench-"))
        self.broker: BrokerProcess | None = None
        self.settings: Settings | None = None

    def __enter__(self) -> Settings:
        migrate(self.database_url)
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", self.vhost], check=True)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*"],
            check=True,
        )
        port, ws_port = free_port(), free_port()
        settings = load_settings(
            environment="test",
            database_url=self.database_url,
            rabbitmq_url=f"amqp://guest:guest@127.0.0.1:5672/{quote(self.vhost, safe='')}",
            jwt_secret="bench-" + secrets.token_hex(16),
            mqtt_port=port,
            mqtt_ws_port=ws_port,
            mqtt_data_dir=self.tmp / "mosquitto",
            metrics_port_worker=0,
        )
        layout = BrokerLayout(
            port=port,
            ws_port=ws_port,
            data_dir=settings.mqtt_data_dir,
            plugin_path=find_plugin(settings),
        )
        settings.mqtt_data_dir.mkdir(parents=True)
        self.broker = BrokerProcess(settings, layout, log_path=self.tmp / "mosquitto.log")
        self.broker.start()
        self.settings = settings
        return settings

    def __exit__(self, *exc: object) -> None:
        if self.broker is not None:
            self.broker.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.vhost], check=False)
        from plantnotify.db.session import engine_for

        engine_for.cache_clear()
        drop_database(self.database_url)


# --- 1. outbox throughput ---------------------------------------------------------------------


def completed_event(user_id: str) -> AnalysisCompleted:
    aid = str(uuid.uuid4())
    return AnalysisCompleted(
        analysis_id=aid,
        user_id=user_id,
        crop_type="tomato",
        primary_concern="Early blight (Alternaria solani) on the lower leaves",
        overall_health_score=64,
        image_url=f"/api/v1/plantanalyses/{aid}/image",
    )


def baseline_publish(settings: Settings, events: list[AnalysisCompleted]) -> float:
    client = MqttClient(service_connect_options(settings, "bench"), max_inflight=1000).start()
    client.wait_connected(10)
    payloads = [(analysis_topic(e.user_id, e.analysis_id), e.to_json_bytes()) for e in events]
    started = time.perf_counter()
    handles = [client.publish(t, p, qos=1, retain=True, expiry=3600) for t, p in payloads]
    for h in handles:
        h.wait(60)
    elapsed = time.perf_counter() - started
    client.stop()
    return elapsed


def outbox_throughput(settings: Settings, count: int) -> None:
    users = [f"u-bench-{i}" for i in range(50)]
    events = [completed_event(users[i % len(users)]) for i in range(count)]
    base = baseline_publish(settings, [completed_event(e.user_id) for e in events])

    with sessions_for(settings).begin() as s:
        for event in events:
            add_event(s, event, 3600)
    publisher = OutboxPublisher(
        settings.database_url,
        service_connect_options(settings, "worker"),
        batch_size=settings.outbox_batch_size,
        sweep_seconds=1.0,
    )
    with sessions_for(settings)() as s:
        from sqlalchemy import text

        def left() -> int:
            return int(
                s.execute(
                    text("SELECT count(*) FROM events WHERE published_at IS NULL")
                ).scalar_one()
            )

        publisher.start()
        publisher.mqtt.wait_connected(10)
        started = time.perf_counter()
        publisher.wake()
        while left():
            time.sleep(0.01)
            s.rollback()
        elapsed = time.perf_counter() - started
    publisher.stop()
    print(
        f"\n1. outbox throughput ({count} retained QoS-1 events, ~{len(events[0].to_json_bytes())} B)"
    )
    print(
        f"   baseline: one MqttClient, no database   {count / base:8.0f} events/s  ({base:.2f} s)"
    )
    print(
        f"   outbox publisher (select, publish, mark) {count / elapsed:8.0f} events/s  "
        f"({elapsed:.2f} s, batch {settings.outbox_batch_size}; includes taking leadership)"
    )


# --- 2. N8N answer -> subscriber --------------------------------------------------------------


def baseline_latency(settings: Settings, samples: int) -> list[float]:
    uid = "u-bench-base"
    got: dict[str, float] = {}
    done = threading.Event()
    with Subscriber(settings, uid) as device:

        def on_message(message: Message) -> None:
            got[message.topic] = time.time()
            if len(got) >= samples:
                done.set()

        device.client._on_message = on_message
        client = MqttClient(service_connect_options(settings, "bench")).start()
        client.wait_connected(10)
        sent: dict[str, float] = {}
        for i in range(samples):
            topic = analysis_topic(uid, f"b{i}")
            sent[topic] = time.time()
            client.publish(topic, b"{}", qos=1, retain=True, expiry=60).wait(10)
            time.sleep(0.005)
        done.wait(10)
        client.stop()
    return [got[t] - sent[t] for t in sent if t in got]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def delivery_latency(settings: Settings, analyses: int, rate: float) -> None:
    """The worker runs as its own process (``plantnotify worker``), as in production; the fake
    N8N, the job publisher and the subscriber share this one."""
    fake = FakeN8n().start()
    fake.default = "slow:0.05"
    worker_settings = with_overrides(
        settings,
        n8n_webhook_url=fake.url,
        n8n_timeout_seconds=10,
        worker_concurrency=16,
        outbox_sweep_seconds=1.0,
        metrics_port_worker=free_port(),
    )
    log_path = Path(tempfile.mkstemp(prefix="plantnotify-bench-worker-", suffix=".log")[1])
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "plantnotify.cli", "worker"],
            env=settings_env(worker_settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 60
    while "worker ready" not in log_path.read_text():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    uid = "u-bench-latency"
    received: dict[str, float] = {}
    with Subscriber(settings, uid) as device:
        original = device._on_message

        def on_latency_message(message: Message) -> None:
            import json

            event = json.loads(message.payload)
            if event.get("event") == EventType.COMPLETED:
                received.setdefault(event["analysisId"], time.time())
            original(message)

        device.client._on_message = on_latency_message
        # Rows first, then the jobs through one confirmed publisher (the API's), so this
        # process spends its time receiving, not connecting.
        ids = [make_analysis(settings, uid)[0] for _ in range(analyses)]
        cpu_before = _cpu_seconds(worker.pid)
        publisher = JobPublisher(settings.rabbitmq_url, app_id="bench")
        started = time.monotonic()
        for i, aid in enumerate(ids):
            # A steady upload rate (real analyses take minutes, so a worker is never saturated
            # by arrivals; this measures the path, not a queue).
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            publisher.publish(AnalysisJob(analysis_id=aid, user_id=uid))
        publisher.close()
        deadline = time.monotonic() + 120
        while len(received) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
    cpu = _cpu_seconds(worker.pid) - cpu_before
    worker.terminate()
    worker.wait(30)
    fake.stop()
    latencies = [received[a] - fake.answered_at[a] for a in ids if a in received]
    # Where the time goes: N8N's answer -> the result transaction starts (the worker reads the
    # answer, gets a connection) -> the subscriber has it (commit, wake-up, outbox, broker).

    to_tx: list[float] = []
    to_device: list[float] = []
    for a in ids:
        if a not in received:
            continue
        [row] = [r for r in event_rows(settings, a) if r.type == EventType.COMPLETED]
        to_tx.append(row.created_at.timestamp() - fake.answered_at[a])
        to_device.append(received[a] - row.created_at.timestamp())
    base = baseline_latency(settings, analyses)
    print(
        f"\n2. N8N answer -> AnalysisCompleted on a user's subscriber ({len(latencies)} analyses, "
        f"{rate:g} uploads/s, N8N answers after 50 ms)"
    )
    print(
        f"   baseline: publish -> receive, no worker  median {ms(statistics.median(base))}  "
        f"p99 {ms(percentile(base, 99))}"
    )
    print(
        f"   worker + outbox                          median {ms(statistics.median(latencies))}  "
        f"p90 {ms(percentile(latencies, 90))}  p99 {ms(percentile(latencies, 99))}  "
        f"max {ms(max(latencies))}"
    )
    print(
        f"     of which: answer -> result transaction starts  median {ms(statistics.median(to_tx))}"
        f"  p99 {ms(percentile(to_tx, 99))}"
    )
    print(
        f"               transaction start -> on the device  median "
        f"{ms(statistics.median(to_device))}  p99 {ms(percentile(to_device, 99))}"
    )
    print(f"   worker CPU: {cpu / len(ids) * 1000:.1f} ms per analysis (user + system)")
    if len(latencies) < len(ids):
        print(f"   MISSING: {len(ids) - len(latencies)} events did not arrive")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--analyses", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="uploads per second")
    args = parser.parse_args()
    setup_logging(None)
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    with Environment() as settings:
        outbox_throughput(settings, args.events)
        delivery_latency(settings, args.analyses, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
