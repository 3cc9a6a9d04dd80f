"""The worker process put together: consumer, job processor, lease keeper, outbox publisher.

``Worker.start()`` / ``Worker.stop()`` are what ``plantnotify worker`` runs (worker/main.py) and
what in-process tests use. Shutdown order matters:

1. stop consuming; running jobs get ``WORKER_SHUTDOWN_GRACE_SECONDS`` to finish and ack;
2. then jobs waiting (to retry N8N, or for another worker) hand their delivery back, and the
   RabbitMQ connection closes, so RabbitMQ redelivers every un-acked job;
3. leases of jobs still inside an N8N call are released, so the redelivery is taken over at
   once (their late result, if any, is refused: the lease is no longer theirs);
4. the outbox gets a moment to publish what was committed; whatever is left is published by
   the next worker that starts.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from plantnotify.contracts.queues import DELIVERY_LIMIT
from plantnotify.contracts.urls import image_url
from plantnotify.db.session import make_engine, session_factory
from plantnotify.service_mqtt import service_connect_options
from plantnotify.settings import Settings
from worker import faults
from worker.consumer import Consumer
from worker.n8n import N8nClient, n8n_url
from worker.outbox import OutboxPublisher
from worker.presence import Presence, new_owner_id
from worker.process import JobProcessor
from worker.retained_expiry import RetainedExpirySweeper
from worker.store import JobStore

log = logging.getLogger("plantnotify.worker")


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.owner = new_owner_id()
        self.engine = make_engine(settings.database_url, pool_size=settings.worker_concurrency + 2)
        # The result, progress stages and image reads are single statements: on an autocommit
        # engine each is one round trip (the result's includes its WAL flush, nothing more).
        self.statements = make_engine(
            settings.database_url, pool_size=settings.worker_concurrency + 2, autocommit=True
        )
        sessions = session_factory(self.engine)
        self.presence = Presence(settings.database_url, self.owner)
        self.cancel = threading.Event()
        self._stopped = threading.Event()

        def link(analysis_id: str) -> str:
            return image_url(analysis_id, settings.public_base_url)

        self.outbox = OutboxPublisher(
            settings.database_url,
            service_connect_options(settings, "worker"),
            batch_size=settings.outbox_batch_size,
            sweep_seconds=settings.outbox_sweep_seconds,
            connections=settings.outbox_connections,
        )
        self.store = JobStore(
            sessions,
            owner=self.owner,
            lease_seconds=settings.worker_lease_seconds,
            event_expiry_seconds=settings.event_expiry_seconds,
            image_url=link,
            max_attempts=DELIVERY_LIMIT,
            statements=self.statements,
        )
        self.n8n = N8nClient(
            n8n_url(settings),
            timeout=settings.n8n_timeout_seconds,
            max_attempts=settings.n8n_max_attempts,
            backoff=settings.n8n_backoff_seconds,
        )
        self.processor = JobProcessor(
            self.store,
            self.n8n,
            wake_outbox=self.outbox.wake,
            cancel=self.cancel,
            image_url=link,
            poll_seconds=min(1.0, settings.worker_lease_seconds / 3),
            unknown_grace_seconds=settings.worker_unknown_analysis_grace_seconds,
        )
        self.consumer = Consumer(
            settings.rabbitmq_url,
            self.processor.process,
            concurrency=settings.worker_concurrency,
            name=f"plantnotify worker {self.owner}",
            on_drain_timeout=self.cancel.set,
        )
        self._threads: list[threading.Thread] = []
        # Expired retained events are cleared here on every engine: MQTT 3.1.1 (NATS) has no
        # message expiry, and Mosquitto 2.0 keeps an expired retained message in memory until
        # a subscriber or a new publish touches its topic (worker/retained_expiry.py).
        self.expiry = RetainedExpirySweeper(
            settings.database_url, service_connect_options(settings, "worker-expiry")
        )

    def start(self) -> Worker:
        # Job threads that hold the GIL (rendering, N8N answers) would otherwise make the
        # outbox thread, woken by a commit, wait up to the default 5 ms for its turn: that
        # wait is on the path to every device. 0.5 ms costs little throughput here.
        sys.setswitchinterval(0.0005)
        if not self.presence.ensure():
            raise RuntimeError("cannot take this worker's presence lock in PostgreSQL")
        faults.announce()
        self.outbox.start(lead=not faults.crash_after_commit_armed())
        self.expiry.start()
        for target, name in ((self._keep_leases, "leases"), (self._consume, "consumer")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker %s started", self.owner)
        return self

    def wait_ready(self, timeout: float) -> bool:
        """Consuming, and connected to the broker."""
        deadline = time.monotonic() + timeout
        if not self.consumer.wait_connected(timeout):
            return False
        try:
            self.outbox.wait_connected(max(0.0, deadline - time.monotonic()))
        except Exception:
            return False
        return True

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("worker stopping: no new jobs; waiting for running ones")
        self.consumer.stop()
        consumer_thread = self._threads[-1] if self._threads else None
        if consumer_thread is not None:
            consumer_thread.join(self.settings.worker_shutdown_grace_seconds + 15)
        self.cancel.set()
        left = self.processor.running()
        if left:
            released = self.store.release(left)
            log.info("released %d lease(s) of analyses still running", released)
        self.outbox.wake()
        time.sleep(0.2)
        self.outbox.stop()
        self.expiry.stop()
        self.n8n.close()
        self.presence.close()
        self.engine.dispose()
        self.statements.dispose()
        log.info("worker stopped")

    # --- threads ------------------------------------------------------------------------

    def _consume(self) -> None:
        self.consumer.run(drain_seconds=self.settings.worker_shutdown_grace_seconds)

    def _keep_leases(self) -> None:
        every = self.settings.worker_lease_seconds / 3
        while not self.cancel.wait(every):
            try:
                self.presence.ensure()
                self.store.renew(self.processor.running())
            except Exception as exc:
                log.warning("could not renew leases: %s", exc)
