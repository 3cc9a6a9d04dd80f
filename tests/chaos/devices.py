"""The chaos run's devices, in child processes (``python -m tests.chaos.devices``).

paho-mqtt waits on its sockets with ``select()``, which cannot watch a descriptor numbered
1024 or more, and each client holds three: one process stops connecting new clients at about
340 of them, silently (that, not NATS, is why the issue-size run once never finished setting
up). So the 500 devices live in hosts of at most ``PER_HOST``, driven over stdin/stdout, one
JSON object a line:

    {"cmd": "start", "devices": [[user, name, node], ...], "ports": [...]}  -> {"refusals", "timeouts"}
    {"cmd": "expect", "by_user": {user: [analysisId, ...]}}                  -> {}
    {"cmd": "status"}      -> {"missing": events not yet on their device, "connected", "total"}
    {"cmd": "report"}      -> {"gaps": [[down, up], ...], "first": {analysisId: arrival}}
    {"cmd": "stop"}

Times are CLOCK_MONOTONIC, the same in every process of the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.topics import analyses_filter
from plantnotify.mqtt import (
    ConnectionState,
    ConnectOptions,
    Credentials,
    Message,
    MqttClient,
    MqttSubscribeError,
    MqttTimeout,
)
from plantnotify.settings import Settings, load_settings

PER_HOST = 200
WAVE = 25
ROOT = Path(__file__).resolve().parents[2]


class Device:
    """A phone: stable client id, persistent session, fails over to the other nodes."""

    def __init__(self, settings: Settings, user: str, name: str, node: int, nodes: list[int]):
        self.user = user
        self.completed: set[str] = set()
        self.arrived: dict[str, float] = {}  # analysis id -> first Completed (monotonic)
        self.down_since: float | None = None
        self.gaps: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        order = nodes[node:] + nodes[:node]

        def creds() -> Credentials:
            return Credentials(user, mint_mqtt_token(settings.mqtt_signer, user, 600))

        self.refusals = 0
        self.timeouts = 0
        self._options = ConnectOptions(
            host="127.0.0.1",
            port=order[0],
            client_id=f"{user}-{name}",
            credentials=creds,
            protocol=4,
            clean_start=False,
            subscriptions=[(analyses_filter(user), 1)],
            # not subscribed again while the broker kept the session: what arrives after
            # a reconnect comes from the persistent session, not from a retained replay
            no_retained_replay=frozenset({analyses_filter(user)}),
            failover=[("127.0.0.1", p) for p in order[1:]],
            reconnect_min_delay=0.2,
            reconnect_max_delay=2.0,
        )
        self.client = MqttClient(self._options, on_message=self._message, on_state=self._state)

    def _message(self, msg: Message) -> None:
        try:
            event = json.loads(msg.payload)
        except ValueError:
            return
        if event.get("status") == "Completed":
            aid = str(event["analysisId"])
            with self._lock:
                self.completed.add(aid)
                self.arrived.setdefault(aid, time.monotonic())

    def _state(self, state: ConnectionState) -> None:
        now = time.monotonic()
        with self._lock:
            if state is ConnectionState.CONNECTED and self.down_since is not None:
                self.gaps.append((self.down_since, now))
                self.down_since = None
            elif state is ConnectionState.DISCONNECTED and self.down_since is None:
                self.down_since = now

    def connect_until_subscribed(self, timeout: float, attempt: float = 45.0) -> None:
        """Connected with the subscription granted; refused or not answered within
        ``attempt`` seconds, the device starts over (as an app would)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.wait_connected(min(attempt, max(1.0, deadline - time.monotonic())))
                return
            except (MqttSubscribeError, MqttTimeout) as exc:
                assert time.monotonic() < deadline, f"{self.user}: never subscribed ({exc})"
                if isinstance(exc, MqttSubscribeError):
                    self.refusals += 1
                else:
                    self.timeouts += 1
                self.client.stop(timeout=2)
                self.client = MqttClient(
                    self._options, on_message=self._message, on_state=self._state
                )
                self.client.start()

    def completed_copy(self) -> set[str]:
        with self._lock:
            return set(self.completed)


def _host() -> None:
    settings = load_settings()
    devices: list[Device] = []
    expect: dict[str, set[str]] = {}
    out = sys.stdout

    def answer(body: dict[str, Any]) -> None:
        out.write(json.dumps(body) + "\n")
        out.flush()

    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        if cmd == "start":
            ports = req["ports"]
            devices = [Device(settings, u, n, node, ports) for u, n, node in req["devices"]]
            try:
                for first in range(0, len(devices), WAVE):
                    wave = devices[first : first + WAVE]
                    for d in wave:
                        d.client.start()
                    for d in wave:
                        d.connect_until_subscribed(240)
            except AssertionError as exc:
                answer({"error": str(exc)})
                continue
            answer(
                {
                    "refusals": sum(d.refusals for d in devices),
                    "timeouts": sum(d.timeouts for d in devices),
                }
            )
        elif cmd == "expect":
            expect = {u: set(ids) for u, ids in req["by_user"].items()}
            answer({})
        elif cmd == "status":
            missing = sum(len(expect.get(d.user, set()) - d.completed_copy()) for d in devices)
            connected = sum(1 for d in devices if d.client.is_connected)
            answer({"missing": missing, "connected": connected, "total": len(devices)})
        elif cmd == "report":
            earliest: dict[str, float] = {}
            gaps: list[tuple[float, float]] = []
            for d in devices:
                with d._lock:
                    gaps.extend(d.gaps)
                    for aid, at in d.arrived.items():
                        if aid not in earliest or at < earliest[aid]:
                            earliest[aid] = at
            answer({"gaps": gaps, "first": earliest})
        elif cmd == "stop":
            for d in devices:
                d.client.stop(timeout=1)
            answer({})
            return


class DeviceHost:
    """The parent's handle on one host process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.devices"],
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._lock = threading.Lock()

    def ask(self, body: dict[str, Any]) -> dict[str, Any]:
        stdin: IO[str] | None = self.proc.stdin
        stdout: IO[str] | None = self.proc.stdout
        assert stdin is not None and stdout is not None
        with self._lock:
            stdin.write(json.dumps(body) + "\n")
            stdin.flush()
            line = stdout.readline()
        if not line:
            raise RuntimeError(f"device host exited ({self.proc.poll()}); see {self._log.name}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise AssertionError(answer["error"])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask({"cmd": "stop"})
                self.proc.wait(15)
            except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
        self._log.close()


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    _host()
