"""Publishing analysis jobs with publisher confirms (the API side of contract §1 step 2).

One connection and one confirm-mode channel per publisher, guarded by a lock: pika is not
thread-safe and the API calls ``publish`` from a thread pool. ``publish`` returns only after
RabbitMQ confirmed the message (persisted in the quorum queue); every failure is a
``QueueUnavailable`` with a reason. One retry on a new connection when the old one died while
idle (heartbeats missed, broker restarted) or when RabbitMQ nacked; a fresh connection that
fails is not retried, so an unreachable RabbitMQ answers within the connect time-out.
"""

from __future__ import annotations

import threading
import time

import pika
import pika.exceptions as pe
from pika.adapters.blocking_connection import BlockingChannel

from plantnotify.amqp.errors import QueueUnavailable
from plantnotify.amqp.topology import declare_topology
from plantnotify.contracts.queues import ANALYSIS_QUEUE, JOB_CONTENT_TYPE, AnalysisJob
from plantnotify.logs import get_logger
from plantnotify.tracing import TRACEPARENT_HEADER

log = get_logger("plantnotify.amqp.publisher")


class JobPublisher:
    """Thread-safe, confirmed, persistent, mandatory publishing of ``AnalysisJob`` messages."""

    def __init__(
        self,
        url: str,
        *,
        app_id: str = "plantnotify",
        connect_timeout: float = 3.0,
        blocked_timeout: float = 10.0,
        heartbeat: int = 15,
    ) -> None:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = connect_timeout
        params.stack_timeout = connect_timeout * 2
        # A broker under a memory/disk alarm blocks publishers; give up instead of hanging.
        params.blocked_connection_timeout = blocked_timeout
        params.heartbeat = heartbeat
        params.client_properties = {"connection_name": f"{app_id} publisher"}
        self._params = params
        self._app_id = app_id
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    # --- public -------------------------------------------------------------------------

    def publish(self, job: AnalysisJob) -> None:
        """Queue ``job``; returns once RabbitMQ confirmed it, raises ``QueueUnavailable``."""
        body = job.to_json_bytes()
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type=JOB_CONTENT_TYPE,
            message_id=job.analysis_id,
            correlation_id=job.request_id,
            app_id=self._app_id,
            timestamp=int(time.time()),
            headers={TRACEPARENT_HEADER: job.traceparent} if job.traceparent else None,
        )
        with self._lock:
            reused = self._channel is not None
            try:
                self._publish_once(body, properties)
                return
            except _Retryable as first:
                if not (reused or first.nacked):
                    raise first.error from None
                log.info("retrying the publish once on a new connection: %s", first.error)
            try:
                self._publish_once(body, properties)
            except _Retryable as second:
                raise second.error from None

    def connect(self) -> None:
        """Open the connection now (start-up); raises ``QueueUnavailable`` when unreachable."""
        with self._lock:
            self._ensure_channel()

    def heartbeat(self) -> None:
        """Service heartbeats of an idle connection; call every few seconds from any thread."""
        if not self._lock.acquire(blocking=False):
            return  # a publish is running and services the connection itself
        try:
            if self._connection is not None and self._connection.is_open:
                self._connection.process_data_events(time_limit=0)
        except pe.AMQPError as exc:
            log.info("RabbitMQ connection lost while idle: %s", type(exc).__name__)
            self._reset()
        finally:
            self._lock.release()

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.is_open

    def close(self) -> None:
        with self._lock:
            self._reset()

    # --- internals (lock held) ----------------------------------------------------------

    def _ensure_channel(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._reset()
        try:
            connection = pika.BlockingConnection(self._params)
        except pe.AMQPError as exc:
            raise QueueUnavailable(f"RabbitMQ is unreachable ({_describe(exc)})") from None
        except OSError as exc:  # DNS failure and other socket errors before AMQP starts
            raise QueueUnavailable(f"RabbitMQ is unreachable ({exc})") from None
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare_topology(channel)
        except pe.AMQPError as exc:
            _close_quietly(connection)
            raise QueueUnavailable(
                f"RabbitMQ refused the queue set-up ({_describe(exc)})"
            ) from None
        self._connection, self._channel = connection, channel
        return channel

    def _publish_once(self, body: bytes, properties: pika.BasicProperties) -> None:
        channel = self._ensure_channel()
        try:
            channel.basic_publish(
                exchange="",
                routing_key=ANALYSIS_QUEUE,
                body=body,
                properties=properties,
                mandatory=True,
            )
        except pe.NackError:
            # reject-publish overflow or an internal broker error: the job is not queued, so
            # one retry cannot duplicate it. Retry on a fresh channel: a channel that saw a
            # quorum queue's "reject publish" state can keep it after the limit went away
            # (seen with a policy change), while a new channel asks the queue afresh.
            self._reset()
            raise _Retryable(
                QueueUnavailable("RabbitMQ refused the job (queue full or broker overloaded)"),
                nacked=True,
            ) from None
        except pe.UnroutableError:
            # The queue was deleted behind our back; redeclare on the next publish.
            self._reset()
            raise QueueUnavailable("the analysis queue does not exist on RabbitMQ") from None
        except (pe.AMQPConnectionError, pe.AMQPChannelError, OSError, ValueError) as exc:
            # OSError/ValueError: pika can surface a dead socket as either.
            self._reset()
            raise _Retryable(
                QueueUnavailable(
                    f"RabbitMQ connection lost while publishing ({_describe(exc)})",
                    maybe_delivered=True,
                )
            ) from None

    def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            _close_quietly(connection)


class _Retryable(Exception):
    """Internal: this attempt failed in a way one more attempt may fix.

    ``nacked``: RabbitMQ refused the message (it is certainly not queued). Otherwise the
    connection died under the publish; worth a retry only if it had been idle before.
    """

    def __init__(self, error: QueueUnavailable, *, nacked: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.nacked = nacked


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _close_quietly(connection: pika.BlockingConnection) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception as exc:  # closing a dead connection can raise anything pika has
        log.debug("ignored error while closing a RabbitMQ connection: %s", _describe(exc))
