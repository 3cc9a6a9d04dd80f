"""One NATS configuration file per node, rendered from ``Settings`` and a cluster layout.

Every node gets the same accounts and the same auth callout; only its name, listeners and the
routes to its peers differ, so the files are ready for three machines
(:meth:`ClusterLayout.for_hosts`) as for three processes on one (:meth:`ClusterLayout.local`).

Accounts:
    APP   every MQTT client (devices and our services), with JetStream (MQTT sessions, retained
          messages); users land here only through the auth callout, except the callouts' own
          ``feed`` user (revocation lines only)
    AUTH  the auth-callout service's own account, with JetStream for one key-value bucket
          (the live connections per user: the cap, exact across callouts)
    SYS   the system account: presence events (``$SYS.ACCOUNT.APP.CONNECT``) and CONNZ

The files contain public nkeys only (see :mod:`.keys`); no secret is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plantnotify.broker.engines.nats.keys import NatsKeys
from plantnotify.contracts.topics import (
    BROKER_PERSISTENT_SESSIONS_TOPIC,
    BROKER_REVOCATIONS_RESYNC_TOPIC,
    BROKER_REVOCATIONS_TOPIC,
    BROKER_SESSIONS_TOPIC,
    SESSIONS_REQUEST_TOPIC,
)
from plantnotify.settings import Settings

APP_ACCOUNT = "APP"
AUTH_ACCOUNT = "AUTH"
SYSTEM_ACCOUNT = "SYS"
CLUSTER_NAME = "plantnotify"
SESSION_IDLE_HOURS = 7 * 24
JS_API_TIMEOUT_SECONDS = 10  # as mosquitto.conf.template's persistent_client_expiration
# Standard ports of a node on its own machine.
STANDARD_PORTS = {"client": 4222, "cluster": 6222, "mqtt": 1883, "ws": 8080, "http": 8222}
# Where the MQTT gateway keeps one record per MQTT session (JSON: "id" = the client id,
# "clean": true unless it outlives its connection), written on every CONNECT.
MQTT_SESSION_RECORDS = "$MQTT.sess.>"


@dataclass(frozen=True)
class NatsNode:
    name: str
    host: str  # the address peers and services reach this node at
    client_port: int
    cluster_port: int
    mqtt_port: int
    ws_port: int
    http_port: int
    bind_host: str = "127.0.0.1"

    @property
    def client_url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"


@dataclass(frozen=True)
class ClusterLayout:
    nodes: tuple[NatsNode, ...]
    data_dir: Path
    name: str = CLUSTER_NAME
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def local(cls, data_dir: Path, ports: Sequence[Sequence[int]]) -> ClusterLayout:
        """N nodes on 127.0.0.1; ``ports`` holds (client, cluster, mqtt, ws, http) per node."""
        nodes = tuple(
            NatsNode(f"n{i + 1}", "127.0.0.1", *p)  # type: ignore[arg-type]
            for i, p in enumerate(ports)
        )
        return cls(nodes, data_dir)

    @classmethod
    def for_hosts(cls, hosts: Sequence[str], data_dir: Path) -> ClusterLayout:
        """One node per machine on the standard ports, listening on every interface."""
        p = STANDARD_PORTS
        nodes = tuple(
            NatsNode(
                f"n{i + 1}",
                host,
                p["client"],
                p["cluster"],
                p["mqtt"],
                p["ws"],
                p["http"],
                bind_host="0.0.0.0",
            )
            for i, host in enumerate(hosts)
        )
        return cls(nodes, data_dir)

    def node_dir(self, node: NatsNode) -> Path:
        return self.data_dir / node.name

    def config_path(self, node: NatsNode) -> Path:
        return self.data_dir / f"{node.name}.conf"


def subject(topic: str) -> str:
    """The NATS subject an MQTT topic is carried on (levels ``/`` become tokens ``.``)."""
    return topic.replace("/", ".")


def _q(value: str) -> str:
    """A NATS config string: JSON quoting is valid there and escapes everything."""
    return json.dumps(value)


def render_node_config(settings: Settings, layout: ClusterLayout, node: NatsNode) -> str:
    keys = NatsKeys.derive(settings.jwt_secret)
    routes = ", ".join(_q(n.route_url) for n in layout.nodes if n is not node)
    b = node.bind_host
    store = layout.node_dir(node) / "jetstream"
    return f"""# plantnotify NATS node {node.name} (generated from Settings; no secrets in here)
server_name: {_q(node.name)}
listen: {_q(f"{b}:{node.client_port}")}
http: {_q(f"{b}:{node.http_port}")}
max_payload: 1MB

jetstream {{
  store_dir: {_q(str(store))}
  max_memory_store: 256MB
  max_file_store: 4GB
}}

cluster {{
  name: {_q(layout.name)}
  listen: {_q(f"{b}:{node.cluster_port}")}
  routes: [{routes}]
}}

mqtt {{
  listen: {_q(f"{b}:{node.mqtt_port}")}
  # a QoS-1 message not acknowledged by a device within this time is sent again
  ack_wait: "30s"
  # sessions and retained messages live in replicated streams: losing a node loses neither
  # (so the worker's retained-state rebuild is never needed on this engine)
  stream_replicas: {min(3, len(layout.nodes))}
  # MQTT 3.1.1 has no session expiry: the QoS-1 queue of a device away this long is dropped
  # (Mosquitto's persistent_client_expiration does the same); the app resyncs from the API
  consumer_inactive_threshold: "{SESSION_IDLE_HOURS}h"
  # how long a CONNECT (session lookup) or a QoS-1 SUBSCRIBE (a replicated JetStream consumer)
  # may wait for the JetStream API; at the default 5 s a few hundred devices arriving at once
  # on a busy node got "unable to connect: ... timeout" and SUBACK 0x80 (measured, chaos test);
  # longer is not better: at 30 s the outbox's publishes stalled ~30 s after a node kill, at 10 s
  # ~16 s (60-device chaos runs)
  js_api_timeout: "{JS_API_TIMEOUT_SECONDS}s"
}}

websocket {{
  listen: {_q(f"{b}:{node.ws_port}")}
  no_tls: true
}}

accounts {{
  {APP_ACCOUNT}: {{
    jetstream: enabled
    users: [
      # the auth callouts in the APP account: the API's revocation feed, the MQTT session
      # records (persistent sessions, for the API's cap) and the sessions picture; nothing else
      {{ nkey: {_q(keys.feed.public)}, permissions: {{
          publish: {{ allow: [{_q(subject(BROKER_REVOCATIONS_RESYNC_TOPIC))}, {_q(subject(BROKER_PERSISTENT_SESSIONS_TOPIC))}, {_q(subject(BROKER_SESSIONS_TOPIC))}] }}
          subscribe: {{ allow: [{_q(subject(BROKER_REVOCATIONS_TOPIC))}, {_q(subject(BROKER_REVOCATIONS_RESYNC_TOPIC))}, {_q(MQTT_SESSION_RECORDS)}, {_q(subject(SESSIONS_REQUEST_TOPIC))}] }}
      }} }}
    ]
  }}
  # JetStream here holds only the callouts' per-user connection records (a key-value bucket)
  {AUTH_ACCOUNT}: {{ jetstream: enabled, users: [ {{ nkey: {_q(keys.callout.public)} }} ] }}
  {SYSTEM_ACCOUNT}: {{ users: [ {{ nkey: {_q(keys.system.public)} }} ] }}
}}
system_account: {SYSTEM_ACCOUNT}

authorization {{
  # every other connection (MQTT devices, our services) is decided by `plantnotify auth-callout`
  auth_callout {{
    issuer: {_q(keys.issuer.public)}
    account: {AUTH_ACCOUNT}
    auth_users: [ {_q(keys.callout.public)}, {_q(keys.system.public)}, {_q(keys.feed.public)} ]
  }}
}}
"""


def write_configs(settings: Settings, layout: ClusterLayout) -> list[Path]:
    """Writes ``<data_dir>/<node>.conf`` for every node; returns the paths."""
    layout.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = []
    for node in layout.nodes:
        layout.node_dir(node).mkdir(parents=True, exist_ok=True, mode=0o700)
        path = layout.config_path(node)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(render_node_config(settings, layout, node))
        paths.append(path)
    return paths
