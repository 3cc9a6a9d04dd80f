"""``plantnotify bridge``: the common start-up (``plantnotify.boot``: settings -> logging -> wait
for PostgreSQL -> migrate) -> connect to the broker (within the same deadline) -> run -> clean
shutdown on SIGTERM/SIGINT (in-flight pushes finish and are recorded).

Exit codes are those of ``plantnotify.boot``: 0 after a clean shutdown, 1 when PostgreSQL or
the broker did not answer in time or the bridge loop ended, 2 for a configuration error
(including a metrics port that cannot be bound).
"""

from __future__ import annotations

import argparse

from prometheus_client import start_http_server

from plantnotify.boot import EXIT_CONFIG, POSTGRESQL, Boot, BootFailure, run_service
from plantnotify.logs import get_logger
from plantnotify.mqtt import MqttError

log = get_logger("plantnotify.bridge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--instance", help="stable name of this bridge (default BRIDGE_INSTANCE or host-pid)"
    )
    parser.add_argument(
        "--wait",
        type=float,
        help="seconds to wait for PostgreSQL and the broker (default STARTUP_TIMEOUT_SECONDS)",
    )
    parser.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")


def run(args: argparse.Namespace) -> int:
    def main(boot: Boot) -> None:
        serve(boot, instance=args.instance, metrics=not args.no_metrics)

    return run_service("bridge", main, dependencies=(POSTGRESQL,), startup_timeout=args.wait)


def serve(boot: Boot, *, instance: str | None, metrics: bool) -> None:
    from bridge.service import Bridge  # imports firebase-admin: only when the command runs

    settings = boot.settings
    bridge = Bridge(settings, instance=instance)
    bridge.start()
    try:
        try:
            bridge.mqtt.wait_connected(timeout=boot.remaining())
        except MqttError as exc:
            raise BootFailure(
                f"the broker at {settings.mqtt_host}:{settings.mqtt_port} is not reachable or "
                f"refused the bridge ({exc}); check MQTT_HOST/MQTT_PORT and JWT_SECRET"
            ) from None
        if metrics:
            try:
                start_http_server(settings.metrics_port_bridge, addr=settings.metrics_host)
            except OSError as exc:
                raise BootFailure(
                    f"cannot serve metrics on port {settings.metrics_port_bridge} ({exc}); "
                    "set METRICS_PORT_BRIDGE or --no-metrics",
                    EXIT_CONFIG,
                ) from None
        log.info(
            "bridge running",
            extra={"instance": bridge.instance, "fcm": getattr(bridge.sender, "send_url", "?")},
        )
        boot.wait_for_stop(alive=lambda: bridge.alive)
    finally:
        bridge.stop()
