"""``plantnotify worker``: the common start-up (``plantnotify.boot``: settings -> logging -> wait
for PostgreSQL and RabbitMQ -> migrate) -> run until SIGTERM -> hand back or finish the jobs.

Exit codes are those of ``plantnotify.boot``: 0 after a clean shutdown, 1 when a dependency
did not come up in time (the log line says which and what to check), 2 for a configuration
error (including a metrics port that cannot be bound).
"""

from __future__ import annotations

import argparse

from plantnotify.boot import EXIT_CONFIG, POSTGRESQL, RABBITMQ, Boot, BootFailure, run_service
from plantnotify.logs import get_logger
from worker import metrics

log = get_logger("plantnotify.worker.main")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency", type=int, help="analyses run at once (default WORKER_CONCURRENCY)"
    )


def run(args: argparse.Namespace) -> int:
    overrides = {"worker_concurrency": args.concurrency} if args.concurrency else {}
    return run_service("worker", main, overrides=overrides, dependencies=(POSTGRESQL, RABBITMQ))


def main(boot: Boot) -> None:
    from worker.service import Worker

    settings = boot.settings
    worker = Worker(settings).start()
    try:
        if not worker.wait_ready(boot.remaining()) and not boot.stop.is_set():
            raise BootFailure(
                f"the worker could not reach RabbitMQ and the MQTT broker at "
                f"{settings.mqtt_host}:{settings.mqtt_port} within "
                f"{settings.startup_timeout_seconds:.0f}s; is `plantnotify broker` running and "
                "JWT_SECRET the same as the broker's?"
            )
        try:
            metrics.serve(settings.metrics_port_worker, settings.metrics_host)
        except OSError as exc:
            raise BootFailure(
                f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port_worker} "
                f"({exc.strerror}); set METRICS_PORT_WORKER (0 turns it off)",
                EXIT_CONFIG,
            ) from None
        log.info("worker ready", extra={"owner": worker.owner})
        boot.wait_for_stop()
    finally:
        worker.stop()
