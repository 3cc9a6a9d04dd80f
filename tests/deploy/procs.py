"""The parts as real processes, started the way a container runs them: `plantnotify <part>`
with every setting in the environment, output (JSON logs) captured per part."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from plantnotify.settings import Settings
from tests.support.net import wait_for


@dataclass
class Part:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    exit_seconds: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "plantnotify.cli", *self.argv],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.alive():
            self.proc.kill()
            self.proc.wait(10)


def start_all(parts: Iterable[Part], timeout: float = 60.0) -> None:
    """Start every part, then wait until each is ready (failing with its log if it died)."""
    parts = list(parts)
    for part in parts:
        part.start()
    for part in parts:
        wait_for(
            lambda part=part: part.ready() or not part.alive(),  # type: ignore[misc]
            timeout=timeout,
            interval=0.2,
            what=f"{part.name} ready",
        )
        assert part.alive(), f"{part.name} exited during start-up:\n{part.log()}"


def stop_all(parts: Iterable[Part], within: float) -> None:
    """SIGTERM every part at once; fail naming every part still running ``within`` s later."""
    parts = list(parts)
    started = time.monotonic()
    for part in parts:
        assert part.proc is not None
        part.proc.send_signal(signal.SIGTERM)
    while time.monotonic() - started < within:
        for part in parts:
            if part.exit_seconds is None and not part.alive():
                part.exit_seconds = time.monotonic() - started
        if all(part.exit_seconds is not None for part in parts):
            return
        time.sleep(0.05)
    hung = [part for part in parts if part.alive()]
    pytest.fail(
        f"still running {within}s after SIGTERM: {[p.name for p in hung]}\n"
        + "\n".join(
            f"--- {p.name} (last lines)\n" + "\n".join(p.log().splitlines()[-15:]) for p in hung
        )
    )


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (http)
            return bool(response.status == 200)
    except OSError:
        return False


def scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        return str(response.read().decode())


def service_env(settings: Settings, **changes: str) -> dict[str, str]:
    """The environment a container would get: the settings as variables, JSON logs. Variables
    of the test runner's own environment that are settings are left out."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(
        ENVIRONMENT="test",
        LOG_FORMAT="json",
        DATABASE_URL=settings.database_url,
        RABBITMQ_URL=settings.rabbitmq_url,
        JWT_SECRET=settings.jwt_secret,
        MQTT_HOST="127.0.0.1",
        MQTT_PORT=str(settings.mqtt_port),
        MQTT_WS_PORT=str(settings.mqtt_ws_port),
    )
    env.update(changes)
    return env
