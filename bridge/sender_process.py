"""Pushes sent from processes of their own (``FCM_SENDER_PROCESSES``), beside the bridge's loop.

firebase-admin's synchronous ``messaging.send`` spends most of a push in Python (requests,
google-auth, JSON): eight sender threads in the bridge process shared one GIL with the MQTT
thread and the loop, and reached 0.6-0.7x of what firebase-admin alone reaches from one process
of its own. Each sender process runs the same pipeline as the threads (:class:`Senders`: a
claimer, ``FCM_CONCURRENCY`` senders and a recorder, on its own database connections): leases
in PostgreSQL keep every (event, device) with one holder at a time, whatever the number of
processes or bridges.

The bridge wakes them when it created deliveries (one ``multiprocessing`` event each; they also
look on their own every few seconds, as the threads do), and they relay their metric updates
to the bridge, which serves them on its ``/metrics``. A sender process that dies is started
again; its leases run out and are taken over, as when a bridge dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
from datetime import timedelta
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from bridge.senders import count_metric

log = logging.getLogger("plantnotify.bridge")

_CTX = multiprocessing.get_context("spawn")  # no fork of a threaded process


def _child(
    settings: Any, instance: str, n: int, parent: int, wake: MpEvent, stop: MpEvent, out: Any
) -> None:
    """A sender process: the pipeline of :class:`bridge.senders.Senders` until ``stop`` (or
    until the bridge process is gone: killed, it cannot tell us)."""
    from sqlalchemy import create_engine

    from bridge.credentials import resolve
    from bridge.fcm import FcmSender
    from bridge.retry import RetryPolicy
    from bridge.senders import Senders
    from bridge.store import Store
    from plantnotify.db.session import session_factory
    from plantnotify.logs import log_context, setup_logging
    from plantnotify.tracing import setup_tracing, shutdown_tracing

    setup_logging(settings, service="bridge")
    setup_tracing("bridge", settings.otel_exporter_otlp_endpoint)
    engine = create_engine(
        settings.database_url,
        pool_size=3,
        max_overflow=2,
        pool_pre_ping=False,
        pool_recycle=600,
    )
    done = threading.Event()
    senders = Senders(
        Store(session_factory(engine), instance),
        FcmSender(resolve(settings), timeout=settings.fcm_http_timeout_seconds),
        RetryPolicy(
            max_attempts=settings.fcm_max_attempts,
            base_delay=settings.fcm_retry_base_seconds,
            max_delay=settings.fcm_retry_max_seconds,
            config_delay=settings.fcm_config_retry_seconds,
            config_give_up_after=settings.fcm_config_give_up_seconds,
        ),
        lease=timedelta(seconds=settings.bridge_lease_seconds),
        concurrency=settings.fcm_concurrency,
        ttl_seconds=settings.fcm_ttl_seconds,
        web_base_url=settings.public_base_url,
        stop=done,
    )
    senders.count = lambda name, label, value=1.0: out.put((name, label, value))
    with log_context(bridge=instance, sender=str(n)):
        log.info("sender process started", extra={"concurrency": settings.fcm_concurrency})
        senders.start()
        try:
            while not stop.is_set():
                if os.getppid() != parent:
                    log.error("the bridge process is gone; sender process %d stops", n)
                    break
                if wake.wait(0.5):
                    wake.clear()  # cleared before waking: a later set is never lost
                    senders.wake()
        finally:
            done.set()
            senders.join(settings.fcm_http_timeout_seconds + 5)
            engine.dispose()
            shutdown_tracing()


class SenderProcesses:
    """``processes`` sender processes; the same ``start``/``wake``/``join`` as :class:`Senders`."""

    def __init__(self, settings: Any, instance: str, processes: int, stop: threading.Event) -> None:
        self.settings = settings
        self.instance = instance
        self.processes = processes
        self._stop = stop
        self._child_stop: MpEvent = _CTX.Event()
        self._wakes: list[MpEvent] = [_CTX.Event() for _ in range(processes)]
        self._procs: list[SpawnProcess | None] = [None] * processes
        self._metrics: Any = _CTX.Queue()
        self._relay: threading.Thread | None = None
        self._watch: threading.Thread | None = None

    def start(self) -> None:
        for n in range(self.processes):
            self._spawn(n)
        self._relay = threading.Thread(target=self._relay_loop, name="fcm-metrics", daemon=True)
        self._watch = threading.Thread(target=self._watch_loop, name="fcm-procs", daemon=True)
        self._relay.start()
        self._watch.start()

    def _spawn(self, n: int) -> None:
        proc = _CTX.Process(
            target=_child,
            args=(
                self.settings,
                self.instance,
                n,
                os.getpid(),
                self._wakes[n],
                self._child_stop,
                self._metrics,
            ),
            name=f"plantnotify-bridge-sender-{n}",
            daemon=True,
        )
        proc.start()
        self._procs[n] = proc

    def wake(self) -> None:
        for w in self._wakes:
            w.set()

    def _relay_loop(self) -> None:
        while True:
            try:
                item = self._metrics.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set() and not any(p and p.is_alive() for p in self._procs):
                    return
                continue
            except (EOFError, OSError):
                return
            count_metric(*item)

    def _watch_loop(self) -> None:
        while not self._stop.wait(1.0):
            for n, proc in enumerate(self._procs):
                if proc is not None and not proc.is_alive() and not self._child_stop.is_set():
                    log.error("sender process %d exited (%s); starting it again", n, proc.exitcode)
                    self._spawn(n)

    def join(self, timeout: float) -> None:
        """After the stop event is set: in-flight sends finish and are recorded, as the
        threads do; a process that does not end in time is terminated (its leases expire)."""
        self._child_stop.set()
        for proc in self._procs:
            if proc is not None:
                proc.join(timeout)
                if proc.is_alive():
                    log.warning("sender process %s did not stop in time; terminated", proc.name)
                    proc.terminate()
                    proc.join(2)
        if self._relay is not None:
            self._relay.join(2)
