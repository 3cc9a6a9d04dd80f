"""``plantnotify broker-metrics``: the broker's CONNECT counters, exported beside the broker.

In production the broker holds only the public MQTT key, so the exporter that ``plantnotify
broker`` runs inside it cannot sign the service token it needs to read the plugin's statistics
(it then only probes whether the broker is up). This command runs the same exporter anywhere
that holds the signing key: it connects to ``MQTT_HOST:MQTT_PORT`` with a service token and
serves ``/metrics`` on ``METRICS_HOST:METRICS_PORT_BROKER``.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from plantnotify.broker.metrics import BrokerMetrics
from plantnotify.logs import get_logger, setup_logging
from plantnotify.settings import load_settings

log = get_logger("plantnotify.broker.metrics")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once",
        action="store_true",
        help="connect, wait for the first statistics (30 s at most), print them and exit",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings, service="broker-metrics")
    if not settings.can_mint_mqtt_tokens:
        log.error(
            "broker-metrics needs the MQTT signing key to read the broker's statistics: set "
            "MQTT_JWT_PRIVATE_KEY_FILE (or run it where the api, worker or bridge run)"
        )
        return 2
    metrics = BrokerMetrics(settings, settings.mqtt_host, settings.mqtt_port)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        metrics.start(0 if args.once else settings.metrics_port_broker, settings.metrics_host)
    except OSError as exc:
        log.error(
            "broker metrics: cannot listen on port %d (%s); set METRICS_PORT_BROKER",
            settings.metrics_port_broker,
            exc,
        )
        return 1
    try:
        if args.once:
            for _ in range(300):
                if metrics.stats is not None or stopping.wait(0.1):
                    break
            stats = metrics.stats
            if stats is None:
                log.error(
                    "no statistics from the broker at %s:%d within 30 s",
                    settings.mqtt_host,
                    settings.mqtt_port,
                )
                return 1
            print(stats.model_dump_json())
            return 0
        stopping.wait()
        return 0
    finally:
        metrics.stop()
