"""The RabbitMQ side of the worker: pika BlockingConnection, manual acks, bounded concurrency.

N8N calls take minutes, so jobs run on their own threads and the connection's I/O loop stays
free (``process_data_events``) to answer heartbeats; pika is not thread-safe, so a job thread
never touches the channel: it settles its delivery through ``add_callback_threadsafe``, which
runs the ack on the I/O thread. ``basic_qos(prefetch_count=WORKER_CONCURRENCY)`` bounds how many
jobs run at once (a thread per unacked delivery).

A message that cannot be decoded is rejected without requeue, so the quorum queue's
dead-letter exchange moves it to the dead-letter queue, with a log line saying why. A job that
keeps crashing its worker is dead-lettered by the queue's delivery limit. A lost connection is
re-opened in a loop with back-off; jobs that were running keep running, their acks for the old
channel are dropped and RabbitMQ redelivers (the processor treats that as a duplicate).
"""

from __future__ import annotations

import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties
from pydantic import ValidationError

from plantnotify.amqp.topology import declare_topology
from plantnotify.contracts.queues import ANALYSIS_QUEUE, AnalysisJob
from plantnotify.tracing import TRACEPARENT_HEADER
from worker import metrics
from worker.process import Result, Verdict

log = logging.getLogger("plantnotify.worker.consumer")

MAX_JOB_BYTES = 4096
IDLE_THREAD_SECONDS = 60.0  # a job thread with nothing to do for this long ends

_Item = tuple[pika.BlockingConnection, BlockingChannel, int, AnalysisJob]


class UndecodableJob(ValueError):
    """A queued message that is not an AnalysisJob; the text says why (for the log line)."""


def decode_job(body: bytes) -> AnalysisJob:
    if len(body) > MAX_JOB_BYTES:
        raise UndecodableJob(f"message of {len(body)} bytes is larger than any job")
    try:
        return AnalysisJob.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        raise UndecodableJob(f"not an AnalysisJob: {where}: {first['msg']}") from None


class Consumer:
    def __init__(
        self,
        url: str,
        handler: Callable[[AnalysisJob], Result],
        *,
        concurrency: int,
        heartbeat: int = 30,
        name: str = "plantnotify worker",
        on_drain_timeout: Callable[[], None] | None = None,
    ) -> None:
        params = pika.URLParameters(url)
        params.heartbeat = heartbeat
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 60
        params.client_properties = {"connection_name": name}
        self._params = params
        self._handler = handler
        self._concurrency = concurrency
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._inflight = 0
        self._inflight_lock = threading.Condition()
        self._connection: pika.BlockingConnection | None = None
        self._on_drain_timeout = on_drain_timeout
        # Job threads waiting for their next job (each its own hand-off queue), newest last:
        # starting a thread per delivery cost more CPU than anything else the consumer does.
        self._idle: list[queue.SimpleQueue[_Item | None]] = []

    # --- control (any thread) -------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking new jobs; :meth:`run` then drains and returns."""
        self._stop.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def inflight(self) -> int:
        with self._inflight_lock:
            return self._inflight

    # --- the loop (one thread) ------------------------------------------------------------

    def run(self, *, drain_seconds: float) -> None:
        """Consume until :meth:`stop`; then wait up to ``drain_seconds`` for running jobs."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._consume(drain_seconds)
                delay = 0.5
            except (pe.AMQPError, OSError) as exc:
                self._connected.clear()
                log.warning(
                    "RabbitMQ connection lost (%s); reconnecting in %.1fs", _describe(exc), delay
                )
            finally:
                self._close()
            if self._stop.wait(delay * random.uniform(0.8, 1.2)):
                break
            delay = min(delay * 2, 15.0)
        self._retire_idle_threads()

    def _consume(self, drain_seconds: float) -> None:
        connection = pika.BlockingConnection(self._params)
        self._connection = connection
        channel = connection.channel()
        declare_topology(channel)
        channel.basic_qos(prefetch_count=self._concurrency)
        on_message = functools.partial(self._on_message, connection)
        tag = channel.basic_consume(ANALYSIS_QUEUE, on_message, auto_ack=False)
        self._connected.set()
        log.info("consuming %s (up to %d jobs at once)", ANALYSIS_QUEUE, self._concurrency)
        while not self._stop.is_set():
            connection.process_data_events(time_limit=0.2)
        # Shutting down: no new deliveries (pika nacks prefetched ones that weren't
        # dispatched yet), then let running jobs finish and ack while the loop keeps going.
        channel.basic_cancel(tag)
        deadline = time.monotonic() + drain_seconds
        while self.inflight and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)
        if self.inflight:
            log.warning(
                "%d job(s) still running after %.0fs; handing them back to RabbitMQ",
                self.inflight,
                drain_seconds,
            )
            if self._on_drain_timeout is not None:
                self._on_drain_timeout()
            # Jobs waiting to retry or waiting for another worker hand back promptly.
            deadline = time.monotonic() + 1.0
            while self.inflight and time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.05)
        connection.process_data_events(time_limit=0)  # send the last acks

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        self._connected.clear()
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pe.AMQPError, OSError) as exc:
                log.debug("ignored error while closing RabbitMQ: %s", _describe(exc))

    # --- deliveries (I/O thread) ----------------------------------------------------------

    def _on_message(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        tag = method.delivery_tag
        try:
            job = decode_job(body)
        except UndecodableJob as exc:
            log.error(
                "dead-lettering undecodable message %s: %s",
                properties.message_id or f"#{tag}",
                exc,
            )
            metrics.JOBS.labels(outcome="dead_lettered").inc()
            channel.basic_nack(tag, requeue=False)
            return
        traceparent = (properties.headers or {}).get(TRACEPARENT_HEADER)
        if isinstance(traceparent, bytes):
            traceparent = traceparent.decode("ascii", "replace")
        if isinstance(traceparent, str) and len(traceparent) <= 55:
            job = job.model_copy(update={"traceparent": traceparent})
        item: _Item = (connection, channel, tag, job)
        with self._inflight_lock:
            self._inflight += 1
            handoff = self._idle.pop() if self._idle else None
        if handoff is not None:
            handoff.put(item)
            return
        handoff = queue.SimpleQueue()
        handoff.put(item)
        threading.Thread(target=self._job_thread, args=(handoff,), name="job", daemon=True).start()

    def _job_thread(self, handoff: queue.SimpleQueue[_Item | None]) -> None:
        """Run jobs handed to this thread until it idles for IDLE_THREAD_SECONDS."""
        item = handoff.get()
        while item is not None:
            connection, channel, tag, job = item
            threading.current_thread().name = f"job-{job.analysis_id[:8]}"
            self._run_job(connection, channel, tag, job)
            with self._inflight_lock:
                self._idle.append(handoff)
            try:
                item = handoff.get(timeout=IDLE_THREAD_SECONDS)
            except queue.Empty:
                with self._inflight_lock:
                    if handoff in self._idle:
                        self._idle.remove(handoff)
                        return
                # A delivery took this thread just as it timed out: its job is on the way.
                item = handoff.get()

    def _retire_idle_threads(self) -> None:
        with self._inflight_lock:
            idle, self._idle = self._idle, []
        for handoff in idle:
            handoff.put(None)

    def _run_job(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        tag: int,
        job: AnalysisJob,
    ) -> None:
        try:
            try:
                result = self._handler(job)
            except Exception:
                log.exception("job %s crashed; handing it back after a pause", job.analysis_id)
                time.sleep(1.0)  # don't spin a broken job through the delivery limit at once
                result = Result(Verdict.HAND_BACK, "unexpected error")
            settle = functools.partial(_settle, channel, tag, job, result)
            try:
                connection.add_callback_threadsafe(settle)
            except (pe.AMQPError, OSError, AttributeError):
                log.info(
                    "connection gone before job %s settled; RabbitMQ will redeliver it",
                    job.analysis_id,
                )
        finally:
            with self._inflight_lock:
                self._inflight -= 1
                self._inflight_lock.notify_all()


def _settle(channel: BlockingChannel, tag: int, job: AnalysisJob, result: Result) -> None:
    """Ack / dead-letter / requeue one delivery (runs on the I/O thread)."""
    if not channel.is_open:
        log.info("channel closed before job %s settled; it will be redelivered", job.analysis_id)
        return
    if result.verdict is Verdict.ACK:
        channel.basic_ack(tag)
    elif result.verdict is Verdict.DEAD_LETTER:
        log.error("dead-lettering job for analysis %s: %s", job.analysis_id, result.reason)
        channel.basic_nack(tag, requeue=False)
    else:
        channel.basic_nack(tag, requeue=True)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
