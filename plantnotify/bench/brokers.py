"""The brokers the bench compares, each started on free ports in a scratch directory.

- ``plain``: Mosquitto with anonymous access, nothing else (the baseline);
- ``password_file``: Mosquitto with its own password-file authentication (PBKDF2-SHA512);
- ``plugin``: our Mosquitto with the JWT plugin, configured by ``plantnotify.broker``;
- ``amqtt``: the pure-Python broker, with JWT auth and per-user topics like our plugin.

All Mosquitto variants share the same listener and logging lines, so only the authentication
differs between them. Processes are stopped by their own pid.
"""

from __future__ import annotations

import base64
import getpass
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


def _mosquitto_user_line() -> str:
    # Started as root, Mosquitto switches to the `mosquitto` user, which cannot read our scratch
    # files; stay the invoking user instead.
    return f"user {getpass.getuser()}\n" if os.geteuid() == 0 else ""


def _common_lines(port: int, ws_port: int | None) -> str:
    lines = [
        "per_listener_settings false",
        "persistence false",
        # Connection log lines cost the broker time per connect; the comparison is of auth.
        "connection_messages false",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "max_keepalive 65535",
        f"listener {port} 127.0.0.1",
    ]
    if ws_port is not None:
        lines += [f"listener {ws_port} 127.0.0.1", "protocol websockets"]
    return "\n".join(lines) + "\n" + _mosquitto_user_line()


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


def start_mosquitto(
    name: str,
    workdir: Path,
    *,
    auth: str,
    password_file: Path | None = None,
    websockets: bool = True,
) -> RunningBroker:
    """Mosquitto with ``auth`` = ``anonymous`` or ``password_file``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ws_port = free_port() if websockets else None
    conf = _common_lines(port, ws_port)
    if auth == "anonymous":
        conf += "allow_anonymous true\n"
    elif auth == "password_file":
        if password_file is None:
            raise ValueError("password_file auth needs a password file")
        conf += f"allow_anonymous false\npassword_file {password_file}\n"
    else:
        raise ValueError(f"unknown auth {auth!r}")
    conf_path = workdir / f"{name}.conf"
    conf_path.write_text(conf)
    log_path = workdir / f"{name}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf_path)], stdout=log, stderr=log)
    broker = _from_popen(name, auth, port, ws_port, proc, log_path, log)
    _wait(broker, [p for p in (port, ws_port) if p])
    return broker


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


def start_broker(ctx: object, kind: str, name: str) -> RunningBroker:
    """A Mosquitto of ``kind`` (plugin / password_file / plain) configured from our template."""
    from plantnotify.bench.stack import start_mosquitto_variant

    return start_mosquitto_variant(ctx, kind, name)  # type: ignore[arg-type]
