"""The brokers the bench compares, each started on free ports in a scratch directory.

- Mosquitto variants (``plain``, ``password_file``, ``plugin``): see ``bench.stack``;
- ``amqtt``: the pure-Python broker, with JWT auth and per-user topics like our plugin.

Processes are stopped by their own pid.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

from bench.running import RunningBroker, from_popen, wait_started
from bench.stack import start_mosquitto_variant
from plantnotify.net import free_port


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
            "bench.agents.amqtt_broker",
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
    broker = from_popen(name, "amqtt", port, ws_port, proc, log_path, log)
    wait_started(broker, [port, ws_port])
    return broker


def start_broker(ctx: object, kind: str, name: str, **kwargs: object) -> RunningBroker:
    """A Mosquitto of ``kind`` (plugin / password_file / plain) made from our template."""
    return start_mosquitto_variant(ctx, kind, name, **kwargs)  # type: ignore[arg-type]
