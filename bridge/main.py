"""``plantnotify bridge``: settings → logging → wait for PostgreSQL and the broker (bounded) →
run → clean shutdown on SIGTERM/SIGINT (in-flight pushes finish and are recorded)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from prometheus_client import start_http_server
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from plantnotify.db.session import make_engine, migrate
from plantnotify.logs import setup_logging
from plantnotify.mqtt import MqttError
from plantnotify.settings import ConfigError, load_settings

log = logging.getLogger("plantnotify.bridge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--instance", help="stable name of this bridge (default BRIDGE_INSTANCE or host-pid)"
    )
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for PostgreSQL and the broker"
    )
    parser.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")


def _wait_for_database(url: str, deadline: float) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return
            except OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"PostgreSQL is not reachable ({exc.orig}); check DATABASE_URL and that "
                        "the server runs (scripts/ensure-services.sh starts it locally)"
                    ) from None
                time.sleep(0.5)
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> int:
    from bridge.service import Bridge  # imports firebase-admin: only when the command runs

    try:
        settings = load_settings()
    except (ConfigError, ValueError) as exc:
        print(f"plantnotify bridge: configuration error: {exc}")
        return 2
    setup_logging(settings, service="bridge")
    deadline = time.monotonic() + args.wait
    try:
        _wait_for_database(settings.database_url, deadline)
        migrate(settings.database_url)
        bridge = Bridge(settings, instance=args.instance)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2

    stop = threading.Event()

    def _terminate(signum: int, frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    bridge.start()
    try:
        bridge.mqtt.wait_connected(timeout=max(1.0, deadline - time.monotonic()))
    except MqttError as exc:
        log.error(
            "the broker at %s:%s is not reachable or refused the bridge (%s); check MQTT_HOST/"
            "MQTT_PORT and JWT_SECRET",
            settings.mqtt_host,
            settings.mqtt_port,
            exc,
        )
        bridge.stop()
        return 3
    if not args.no_metrics:
        try:
            start_http_server(settings.metrics_port_bridge, addr=settings.metrics_host)
        except OSError as exc:
            log.error(
                "cannot serve metrics on port %s (%s); set METRICS_PORT_BRIDGE or --no-metrics",
                settings.metrics_port_bridge,
                exc,
            )
            bridge.stop()
            return 2
    log.info(
        "bridge running",
        extra={"instance": bridge.instance, "fcm": getattr(bridge.sender, "send_url", "?")},
    )
    while not stop.wait(1.0):
        if not bridge.alive:
            log.error("the bridge loop ended unexpectedly")
            return 1
    bridge.stop()
    return 0
