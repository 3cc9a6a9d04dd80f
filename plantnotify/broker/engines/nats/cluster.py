"""A local NATS cluster as child processes: N nodes and one auth callout beside each.

Used by ``plantnotify broker --engine nats`` and the tests. ``start`` returns once every node
reports healthy (JetStream included) and an MQTT service client has connected through the
callout, i.e. once the cluster accepts our clients. Nodes and callouts can be killed and
started one by one (chaos tests).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from plantnotify.broker.engines.nats.binary import find_nats_server
from plantnotify.broker.engines.nats.config import ClusterLayout, NatsNode, write_configs
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.mqtt import ConnectOptions, Credentials, MqttClient, MqttError
from plantnotify.net import free_port
from plantnotify.settings import ConfigError, Settings

CALLOUT_READY = "auth callout ready"
# Settings the auth callout reads (everything else it does not need).
CALLOUT_ENV = (
    "jwt_secret",
    "mqtt_jwt_algorithm",
    "mqtt_jwt_public_key_file",
    "mqtt_audience",
    "mqtt_issuer",
    "mqtt_leeway_seconds",
    "mqtt_max_connections_per_user",
    "mqtt_revocation_sync_seconds",
    "log_format",
)


class ClusterError(RuntimeError):
    """The cluster could not be started; the message has the log tails."""


def local_layout(data_dir: Path, nodes: int = 3) -> ClusterLayout:
    ports: list[list[int]] = []
    taken: set[int] = set()
    for _ in range(nodes):
        row: list[int] = []
        while len(row) < 5:
            p = free_port()
            if p not in taken:
                taken.add(p)
                row.append(p)
        ports.append(row)
    return ClusterLayout.local(data_dir, ports)


def callout_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for name in CALLOUT_ENV:
        value = getattr(settings, name)
        if value is None:
            env.pop(name.upper(), None)
        else:
            env[name.upper()] = str(value)
    env["ENVIRONMENT"] = settings.environment
    env["LOG_LEVEL"] = "INFO"  # its "ready" line is how start() knows it answers
    return env


class _Child:
    def __init__(self, argv: list[str], log_path: Path, env: Mapping[str, str] | None) -> None:
        self.argv = argv
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.log_start = 0

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.log_start = self._log.tell()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_since_start(self) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def send(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def signal(self, sig: int, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


class NatsCluster:
    def __init__(
        self,
        settings: Settings,
        layout: ClusterLayout,
        *,
        callouts: bool = True,
        binary: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.binary = binary or find_nats_server()
        self.with_callouts = callouts
        self.nodes: list[_Child] = []
        self.callouts: list[_Child] = []
        log_dir = layout.data_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._configs = write_configs(settings, layout)
        for node, conf in zip(layout.nodes, self._configs, strict=True):
            self.nodes.append(
                _Child([self.binary, "-c", str(conf)], log_dir / f"{node.name}.log", env)
            )
            others = [n.client_url for n in layout.nodes if n is not node]
            argv = [
                sys.executable,
                "-m",
                "plantnotify.cli",
                "auth-callout",
                "--name",
                f"callout-{node.name}",
                "--servers",
                ",".join([node.client_url, *others]),
            ]
            self.callouts.append(
                _Child(argv, log_dir / f"callout-{node.name}.log", callout_env(settings, env))
            )

    # --- what clients need ------------------------------------------------------------------

    @property
    def mqtt_ports(self) -> list[int]:
        return [n.mqtt_port for n in self.layout.nodes]

    @property
    def ws_ports(self) -> list[int]:
        return [n.ws_port for n in self.layout.nodes]

    @property
    def client_urls(self) -> list[str]:
        return [n.client_url for n in self.layout.nodes]

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for child in self.nodes:
            child.start()
        for i in range(len(self.nodes)):
            self._wait_node(i, deadline)
        if self.with_callouts:
            for child in self.callouts:
                child.start()
            for i in range(len(self.callouts)):
                self._wait_callout(i, deadline)
            self.wait_accepting(max(1.0, deadline - time.monotonic()))

    def start_node(self, index: int, timeout: float = 30.0) -> None:
        self.start_nodes([index], timeout)

    def start_nodes(self, indices: list[int], timeout: float = 60.0) -> None:
        """Starts these nodes together, then waits for each: after a whole-cluster outage no
        node is healthy before the others are back (JetStream's meta layer needs a quorum)."""
        deadline = time.monotonic() + timeout
        for index in indices:
            self.nodes[index].start()
        for index in indices:
            self._wait_node(index, deadline)

    def kill_node(self, index: int) -> None:
        self.nodes[index].signal(signal.SIGKILL)

    def start_callout(self, index: int, timeout: float = 30.0) -> None:
        self.callouts[index].start()
        self._wait_callout(index, time.monotonic() + timeout)

    def kill_callout(self, index: int) -> None:
        self.callouts[index].signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM to every callout, then to every node at once (each saves its stores)."""
        for group, timeout in ((self.callouts, 5.0), (self.nodes, 15.0)):
            for child in group:
                child.send(signal.SIGTERM)
            for child in group:
                child.signal(signal.SIGTERM, timeout)

    def wait_any_exit(self, poll: float = 0.5) -> _Child:
        """Blocks until some node or callout exits; returns it (foreground command)."""
        while True:
            for child in [*self.nodes, *self.callouts]:
                if child.proc is not None and child.proc.poll() is not None:
                    return child
            time.sleep(poll)

    # --- readiness --------------------------------------------------------------------------

    def node_healthy(self, node: NatsNode) -> bool:
        url = f"http://127.0.0.1:{node.http_port}/healthz"
        if node.bind_host not in ("0.0.0.0", "127.0.0.1", "::"):
            url = f"http://{node.bind_host}:{node.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 (our node)
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_accepting(self, timeout: float = 30.0) -> None:
        """Returns once an MQTT service client has connected through the callout on every node.

        A healthy node is not yet a node that accepts MQTT: the account's first MQTT connection
        creates JetStream's replicated session and retained streams, and until their leaders
        are elected a busy node closes new connections ("unable to connect: ... timeout").
        Without the signing key (RS256 with only the public key here) there is nothing to
        connect with, and it returns at once.
        """
        try:
            signer = self.settings.mqtt_signer
        except ConfigError:
            return
        deadline = time.monotonic() + timeout
        for node in self.layout.nodes:
            name = f"svc-warmup-{node.name}"
            token = mint_mqtt_token(signer, name, 300, service=True)
            options = ConnectOptions(
                host=node.host,
                port=node.mqtt_port,
                client_id=name,
                credentials=functools.partial(Credentials, name, token),
                protocol=4,
            )
            last: MqttError | None = None
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClusterError(
                        f"nats node {node.name} does not accept MQTT connections: {last}"
                    )
                with MqttClient(options) as client:
                    try:
                        client.wait_connected(min(10.0, remaining))
                        break
                    except MqttError as exc:
                        last = exc
                time.sleep(0.2)

    def _wait_node(self, index: int, deadline: float) -> None:
        child, node = self.nodes[index], self.layout.nodes[index]
        while time.monotonic() < deadline:
            if not child.running():
                raise ClusterError(
                    f"nats-server {node.name} exited during start-up:\n"
                    + _tail(child.log_since_start())
                )
            if self.node_healthy(node):
                return
            time.sleep(0.1)
        raise ClusterError(
            f"nats-server {node.name} not healthy in time:\n" + _tail(child.log_since_start())
        )

    def _wait_callout(self, index: int, deadline: float) -> None:
        child = self.callouts[index]
        while time.monotonic() < deadline:
            if not child.running():
                raise ClusterError(
                    "auth callout exited during start-up:\n" + _tail(child.log_since_start())
                )
            if CALLOUT_READY in child.log_since_start():
                return
            time.sleep(0.05)
        raise ClusterError("auth callout not ready in time:\n" + _tail(child.log_since_start()))


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
