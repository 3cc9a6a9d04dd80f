"""``plantnotify broker``: our Mosquitto with the plugin, in the foreground.

settings -> logging -> ports (a taken default is replaced by a free one) -> config -> mosquitto
-> wait; SIGTERM / Ctrl-C stop it cleanly (Mosquitto saves its database on SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from plantnotify.broker.config import BrokerConfigError
from plantnotify.broker.metrics import BrokerMetrics
from plantnotify.broker.process import BrokerError, BrokerProcess
from plantnotify.logs import get_logger, setup_logging
from plantnotify.settings import ConfigError, load_settings

log = get_logger("plantnotify.broker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=["mosquitto", "nats"],
        default=None,
        help="mosquitto (one node, the plugin) or nats (a local 3-node cluster with an auth "
        "callout beside each node); default: BROKER_ENGINE",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the generated mosquitto.conf and exit (secrets are not in it)",
    )
    parser.add_argument(
        "--nodes", type=int, default=3, help="nats: number of local nodes (default 3)"
    )
    parser.add_argument(
        "--write-config",
        metavar="DIR",
        type=Path,
        default=None,
        help="nats: write one config file per node into DIR and exit (with --hosts: one node "
        "per machine on the standard ports)",
    )
    parser.add_argument(
        "--hosts",
        default=None,
        help="nats, with --write-config or --node: the machines' addresses, comma-separated",
    )
    parser.add_argument(
        "--node",
        default=None,
        help="nats, with --hosts: run only this node (n1, n2, ...) in the foreground, as on its "
        "own machine (its config written to NATS_DATA_DIR); the callout runs beside it",
    )


def _kill_if_running(broker: BrokerProcess) -> None:
    if broker.running() and broker.pid is not None:
        log.error("mosquitto did not stop within 10 s of SIGTERM; killing it")
        os.kill(broker.pid, signal.SIGKILL)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except (ConfigError, ValueError) as exc:
        print(f"plantnotify broker: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings, service="broker")
    if (args.engine or settings.broker_engine) == "nats":
        from plantnotify.broker.engines.nats.run import run_cluster

        return run_cluster(settings, args)
    try:
        broker = BrokerProcess.from_settings(settings)
    except (BrokerError, BrokerConfigError) as exc:
        log.error("%s", exc)
        return 2
    if args.print_config:
        from plantnotify.broker.config import render_config

        print(render_config(settings, broker.layout))
        return 0
    for note in broker.port_notes:
        log.warning("%s", note)

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only signal here: the main thread is inside wait() and returns when mosquitto exits.
        if stopping.is_set() or broker.pid is None:
            return
        stopping.set()
        os.kill(broker.pid, signal.SIGTERM)
        timer = threading.Timer(10.0, _kill_if_running, args=(broker,))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        broker.start()
    except BrokerError as exc:
        log.error("%s", exc)
        return 1
    loopback = settings.mqtt_bind_host in ("0.0.0.0", "::", "")
    metrics = BrokerMetrics(
        settings, "127.0.0.1" if loopback else settings.mqtt_bind_host, broker.port
    )
    try:
        metrics.start(settings.metrics_port_broker, settings.metrics_host)
    except OSError as exc:
        log.error(
            "broker metrics: cannot listen on port %d (%s); set METRICS_PORT_BROKER "
            "(0 turns them off)",
            settings.metrics_port_broker,
            exc,
        )
    host = settings.mqtt_public_host or settings.mqtt_host
    log.info(
        "mosquitto running: mqtt://%s:%d  ws://%s:%d/mqtt  (pid %s, data %s)",
        host,
        broker.port,
        host,
        broker.ws_port,
        broker.pid,
        broker.layout.data_dir,
    )
    log.info("debug a user's events: plantnotify token 42 --mosquitto-sub")
    rc = broker.wait()
    metrics.stop()
    broker.stop()  # closes the log and removes the runtime file; the process is gone
    if stopping.is_set():
        log.info("mosquitto stopped")
        return 0
    log.error("mosquitto exited with status %d", rc)
    return rc or 1
