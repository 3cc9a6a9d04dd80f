"""The brokers the bench compares, each started on free ports in a scratch directory.

- Mosquitto variants (``plain``, ``password_file``, ``plugin``): see ``plantnotify.bench.stack``;
- ``amqtt``: the pure-Python broker, with JWT auth and per-user topics like our plugin.

Processes are stopped by their own pid.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from plantnotify.bench.procs import cpu_seconds, free_port, rss_kib, wait_port


@dataclass
class RunningBroker:
    name: str
    kind: str
    port: int
    ws_port: int | None
    pid: int
    log_path: Path
    _stop: Callable[[], None] = field(repr=False)
    _alive: Callable[[], bool] = field(repr=False)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self._alive()

    def stop(self) -> None:
        self._stop()


def _from_popen(
    name: str,
    kind: str,
    port: int,
    ws_port: int | None,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    log: IO[bytes],
) -> RunningBroker:
    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()

    return RunningBroker(
        name, kind, port, ws_port, proc.pid, log_path, stop, lambda: proc.poll() is None
    )


def write_password_file(path: Path, users: dict[str, str], iterations: int = 101) -> None:
    """A Mosquitto 2.0 password file (``$7$`` = PBKDF2-SHA512, what ``mosquitto_passwd`` writes).

    Written directly because ``mosquitto_passwd`` takes one user per run; the format is checked
    against ``mosquitto_passwd``'s own output in the bench tests.
    """
    lines = []
    for username, password in users.items():
        salt = secrets.token_bytes(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
        lines.append(
            f"{username}:$7${iterations}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}"
        )
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def start_amqtt(name: str, workdir: Path, *, secret: str, audience: str) -> RunningBroker:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ws_port = free_port()
    log_path = workdir / f"{name}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantnotify.bench.agents.amqtt_broker",
            "--port",
            str(port),
            "--ws-port",
            str(ws_port),
            "--audience",
            audience,
        ],
        stdout=log,
        stderr=log,
        env={**os.environ, "PLANTNOTIFY_BENCH_SECRET": secret},
    )
    broker = _from_popen(name, "amqtt", port, ws_port, proc, log_path, log)
    _wait(broker, [port, ws_port])
    return broker


def _wait(broker: RunningBroker, ports: list[int]) -> None:
    try:
        for p in ports:
            wait_port(p, 20, f"broker {broker.name}")
    except RuntimeError:
        broker.stop()
        tail = broker.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"broker {broker.name} did not start; its log:\n{tail}") from None
    if not broker.alive():
        raise RuntimeError(f"broker {broker.name} exited at start; see {broker.log_path}")


def start_broker(ctx: object, kind: str, name: str, **kwargs: object) -> RunningBroker:
    """A Mosquitto of ``kind`` (plugin / password_file / plain) made from our template."""
    from plantnotify.bench.stack import start_mosquitto_variant

    return start_mosquitto_variant(ctx, kind, name, **kwargs)  # type: ignore[arg-type]
