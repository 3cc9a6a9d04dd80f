"""Fixtures and helpers for the worker tests: analyses in the database, jobs on RabbitMQ,
worker settings wired to the fake N8N and our broker, in-process and subprocess workers, and
MQTT subscribers with *user* credentials (what a phone would use)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from sqlalchemy import text

from devtools.world import Subscriber, event_rows, sessions_for, settings_env, with_overrides
from plantnotify.amqp.topology import declare_topology
from plantnotify.contracts.events import AnalysisStatus
from plantnotify.contracts.queues import ANALYSIS_QUEUE, DEAD_LETTER_QUEUE, AnalysisJob
from plantnotify.db.models import Analysis, EventRow
from plantnotify.settings import Settings
from tests.support.fake_n8n import FakeN8n
from tests.support.rabbit import private_vhost
from tests.support.services import RUN_ID

ROOT = Path(__file__).resolve().parents[2]


# --- database ---------------------------------------------------------------------------------


def analysis_row(settings: Settings, analysis_id: str) -> Analysis:
    with sessions_for(settings)() as s:
        row = s.get(Analysis, analysis_id)
        assert row is not None
        return row


def wait_status(settings: Settings, analysis_id: str, timeout: float = 15.0) -> Analysis:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = analysis_row(settings, analysis_id)
        if row.status != AnalysisStatus.PROCESSING:
            return row
        time.sleep(0.05)
    raise AssertionError(f"analysis {analysis_id} still Processing after {timeout}s")


def wait_published(settings: Settings, analysis_id: str, timeout: float = 15.0) -> list[EventRow]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = event_rows(settings, analysis_id)
        if rows and all(r.published_at is not None for r in rows):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"events of {analysis_id} not all published after {timeout}s")


def unpublished_count(settings: Settings) -> int:
    with sessions_for(settings)() as s:
        return int(
            s.execute(text("SELECT count(*) FROM events WHERE published_at IS NULL")).scalar_one()
        )


# --- RabbitMQ ---------------------------------------------------------------------------------


class Queues:
    """Publish raw messages and look at the queues of one vhost."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = conn.channel()
        declare_topology(channel)
        return conn, channel

    def publish_raw(self, body: bytes, message_id: str | None = None) -> None:
        conn, channel = self._channel()
        try:
            channel.confirm_delivery()
            channel.basic_publish(
                "",
                ANALYSIS_QUEUE,
                body,
                pika.BasicProperties(delivery_mode=2, message_id=message_id),
                mandatory=True,
            )
        finally:
            conn.close()

    def publish_job(self, analysis_id: str, user_id: str) -> None:
        job = AnalysisJob(analysis_id=analysis_id, user_id=user_id)
        self.publish_raw(job.to_json_bytes(), message_id=analysis_id)

    def depth(self, queue: str = ANALYSIS_QUEUE) -> int:
        conn, channel = self._channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.message_count)
        finally:
            conn.close()

    def drain_dead_letters(self) -> list[bytes]:
        conn, channel = self._channel()
        bodies = []
        try:
            while True:
                method, _, body = channel.basic_get(DEAD_LETTER_QUEUE, auto_ack=True)
                if method is None:
                    return bodies
                bodies.append(body)
        finally:
            conn.close()

    def purge(self) -> None:
        conn, channel = self._channel()
        try:
            channel.queue_purge(ANALYSIS_QUEUE)
            channel.queue_purge(DEAD_LETTER_QUEUE)
        finally:
            conn.close()


@pytest.fixture(scope="session")
def worker_rabbitmq_url(rabbitmq_url: str) -> Iterator[str]:
    """A vhost of the worker tests' own: other tests' jobs never reach a test worker."""
    with private_vhost(f"plantnotify_worker_{RUN_ID}") as url:
        yield url


@pytest.fixture
def queues(worker_rabbitmq_url: str) -> Queues:
    q = Queues(worker_rabbitmq_url)
    q.purge()
    return q


# --- settings and workers ---------------------------------------------------------------------


@pytest.fixture
def worker_settings(
    settings: Settings, worker_rabbitmq_url: str, fake_n8n: FakeN8n, queues: Queues
) -> Settings:
    """Our broker, the worker vhost, the fake N8N, and time-scaled delays."""
    return with_overrides(
        settings,
        rabbitmq_url=worker_rabbitmq_url,
        n8n_webhook_url=fake_n8n.url,
        n8n_timeout_seconds=1.0,
        n8n_max_attempts=3,
        n8n_backoff_seconds=0.05,
        worker_concurrency=8,
        worker_lease_seconds=3.0,
        worker_shutdown_grace_seconds=1.0,
        worker_unknown_analysis_grace_seconds=0.3,
        outbox_sweep_seconds=0.5,
        metrics_port_worker=0,
        startup_timeout_seconds=20.0,
    )


@pytest.fixture
def start_worker(worker_settings: Settings) -> Iterator[Callable[..., Any]]:
    """``start_worker(**overrides)``: an in-process Worker, ready; all stopped at test end."""
    from worker.service import Worker

    started: list[Worker] = []

    def start(**overrides: Any) -> Worker:
        settings = with_overrides(worker_settings, **overrides) if overrides else worker_settings
        worker = Worker(settings).start()
        started.append(worker)
        assert worker.wait_ready(15), "worker did not connect to RabbitMQ and the broker"
        return worker

    yield start
    for worker in reversed(started):
        worker.stop()


class WorkerProcess:
    """``plantnotify worker`` as a real child process."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in wait/kill)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plantnotify.cli", "worker"],
            env={**settings_env(settings), **extra_env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def wait_log(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"worker log has no {needle!r}:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._log.close()
        return code


@pytest.fixture
def spawn_worker(
    worker_settings: Settings, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    procs: list[WorkerProcess] = []

    def spawn(extra_env: dict[str, str] | None = None, **overrides: Any) -> WorkerProcess:
        settings = with_overrides(worker_settings, **overrides) if overrides else worker_settings
        proc = WorkerProcess(settings, tmp_path / f"worker-{len(procs)}.log", extra_env or {})
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        proc.kill()


# --- MQTT subscribers -------------------------------------------------------------------------


@pytest.fixture
def subscriber(worker_settings: Settings) -> Iterator[Callable[[str], Subscriber]]:
    opened: list[Subscriber] = []

    def open_(user_id: str) -> Subscriber:
        sub = Subscriber(worker_settings, user_id).__enter__()
        opened.append(sub)
        return sub

    yield open_
    for sub in opened:
        sub.__exit__()
