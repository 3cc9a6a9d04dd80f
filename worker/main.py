"""``plantnotify worker``: settings -> logging -> bounded wait for dependencies -> run -> SIGTERM.

Exit codes: 0 after a clean shutdown, 1 when a dependency did not come up in time (the log
line says which and what to check), 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import pika
import pika.exceptions as pe
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from plantnotify.db.session import make_engine
from plantnotify.logs import get_logger, setup_logging
from plantnotify.settings import ConfigError, Settings, load_settings
from worker import metrics

log = get_logger("plantnotify.worker.main")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency", type=int, help="analyses run at once (default WORKER_CONCURRENCY)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        overrides = {"worker_concurrency": args.concurrency} if args.concurrency else {}
        settings = load_settings(**overrides)
    except (ConfigError, ValueError) as exc:
        print(f"plantnotify worker: configuration error: {exc}")
        return 2
    setup_logging(settings, service="worker")

    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only flag it: a handler that logs can re-enter a half-written log line.
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    deadline = time.monotonic() + settings.startup_timeout_seconds
    for name, check in (("PostgreSQL", _database_ready), ("RabbitMQ", _rabbitmq_ready)):
        if not _wait(name, lambda c=check: c(settings), deadline, stop):  # type: ignore[misc]
            return 0 if stop.is_set() else 1

    from worker.service import Worker

    worker = Worker(settings).start()
    try:
        remaining = max(1.0, deadline - time.monotonic())
        if not worker.wait_ready(remaining) and not stop.is_set():
            log.error(
                "the worker could not reach RabbitMQ and the MQTT broker at %s:%d within %.0fs; "
                "is `plantnotify broker` running and JWT_SECRET the same as the broker's?",
                settings.mqtt_host,
                settings.mqtt_port,
                settings.startup_timeout_seconds,
            )
            return 1
        try:
            metrics.serve(settings.metrics_port_worker, settings.metrics_host)
        except OSError as exc:
            log.error(
                "cannot serve metrics on %s:%d (%s); set METRICS_PORT_WORKER (0 turns it off)",
                settings.metrics_host,
                settings.metrics_port_worker,
                exc.strerror,
            )
            return 2
        log.info("worker ready", extra={"owner": worker.owner})
        while not stop.wait(1.0):
            pass
        log.info("received %s; shutting down", received[0] if received else "a stop request")
    finally:
        worker.stop()
    return 0


def _wait(
    name: str, check: Callable[[], str | None], deadline: float, stop: threading.Event
) -> bool:
    """Poll ``check`` (None = ready, else the reason) until ready or the deadline."""
    reason = check()
    if reason is None:
        return True
    log.info("waiting for %s: %s", name, reason)
    while not stop.wait(0.5):
        reason = check()
        if reason is None:
            log.info("%s is up", name)
            return True
        if time.monotonic() > deadline:
            log.error("%s did not come up in time: %s", name, reason)
            return False
    return False


def _database_ready(settings: Settings) -> str | None:
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1 FROM events LIMIT 0"))
            conn.execute(text("SELECT 1 FROM outbox_state LIMIT 0"))
        return None
    except SQLAlchemyError as exc:
        message = str(exc.orig if hasattr(exc, "orig") else exc).strip().splitlines()[0]
        if "does not exist" in message:
            return f"{message} (run `plantnotify migrate`)"
        return message
    finally:
        engine.dispose()


def _rabbitmq_ready(settings: Settings) -> str | None:
    params = pika.URLParameters(settings.rabbitmq_url)
    params.connection_attempts = 1
    params.socket_timeout = 2
    try:
        pika.BlockingConnection(params).close()
        return None
    except (pe.AMQPError, OSError) as exc:
        return f"{type(exc).__name__} {str(exc).strip()}".strip()
