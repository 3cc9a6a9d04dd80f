"""``plantnotify broker --engine nats``: a local cluster in the foreground, or config files.

* no options: N nodes (default 3) on free local ports, data in NATS_DATA_DIR, an auth callout
  beside each node; prints what clients and services need; SIGTERM / Ctrl-C stop it all.
* ``--write-config DIR --hosts a,b,c``: one file per node for three machines (standard ports,
  listening on every interface) and exit; run ``nats-server -c nX.conf`` and
  ``plantnotify auth-callout --servers nats://<this machine>:4222,...`` on each.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from plantnotify.broker.engines.nats.binary import find_nats_server
from plantnotify.broker.engines.nats.cluster import ClusterError, NatsCluster, local_layout
from plantnotify.broker.engines.nats.config import ClusterLayout, write_configs
from plantnotify.broker.engines.nats.runtime import remove_cluster_runtime, write_cluster_runtime
from plantnotify.logs import get_logger
from plantnotify.settings import Settings

log = get_logger("plantnotify.broker")


def run_cluster(settings: Settings, args: argparse.Namespace) -> int:
    data_dir = (args.write_config or settings.nats_data_dir).resolve()
    if args.node is not None:
        return run_node(settings, args, data_dir)
    if args.write_config is not None:
        if args.hosts:
            layout = ClusterLayout.for_hosts(
                [h.strip() for h in args.hosts.split(",") if h.strip()], data_dir
            )
        else:
            layout = local_layout(data_dir, args.nodes)
        for path in write_configs(settings, layout):
            print(path)
        return 0
    cluster = NatsCluster(settings, local_layout(data_dir, args.nodes))
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
    except ClusterError as exc:
        log.error("%s", exc)
        cluster.stop()
        return 1
    for node in cluster.layout.nodes:
        log.info(
            "nats node %s: mqtt://%s:%d  ws://%s:%d/mqtt  nats://%s:%d  monitor http://%s:%d",
            node.name,
            node.host,
            node.mqtt_port,
            node.host,
            node.ws_port,
            node.host,
            node.client_port,
            node.host,
            node.http_port,
        )
    write_cluster_runtime(
        data_dir,
        {
            "mqttPorts": cluster.mqtt_ports,
            "wsPorts": cluster.ws_ports,
            "natsUrls": cluster.client_urls,
        },
    )
    first = cluster.layout.nodes[0]
    log.info(
        "services: BROKER_ENGINE=nats MQTT_PORT=%d MQTT_WS_PORT=%d NATS_URLS=%s "
        "(MQTT 3.1.1 only; WebSocket at /mqtt)",
        first.mqtt_port,
        first.ws_port,
        ",".join(cluster.client_urls),
    )

    def watch() -> None:
        cluster.wait_any_exit()
        stopping.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stopping.wait()
    exited = [
        c for c in [*cluster.nodes, *cluster.callouts] if c.proc and c.proc.poll() is not None
    ]
    cluster.stop()
    remove_cluster_runtime(data_dir)
    if exited:
        log.error("%s exited; the cluster was stopped", exited[0].argv[0])
        return 1
    log.info("nats cluster stopped")
    return 0


def run_node(settings: Settings, args: argparse.Namespace, data_dir: Path) -> int:
    """One node of a cluster of machines (``--hosts``), replacing this process."""
    if not args.hosts:
        log.error("--node needs --hosts (every node's address, in node order)")
        return 2
    layout = ClusterLayout.for_hosts(
        [h.strip() for h in args.hosts.split(",") if h.strip()], data_dir
    )
    names = [n.name for n in layout.nodes]
    if args.node not in names:
        log.error("--node %s is not one of %s", args.node, ", ".join(names))
        return 2
    write_configs(settings, layout)
    node = next(n for n in layout.nodes if n.name == args.node)
    binary = find_nats_server()
    log.info("nats node %s: exec %s -c %s", node.name, binary, layout.config_path(node))
    os.execv(binary, [binary, "-c", str(layout.config_path(node))])  # noqa: S606 (our binary)
    return 0  # not reached
