"""A broker the bench started: its ports, pid, log, and how to stop it.

Shared by ``bench.stack`` (our Mosquitto variants) and ``bench.brokers`` (amqtt, and the entry
that picks a variant), so the two never import each other both ways.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench.procs import cpu_seconds, rss_kib, wait_port


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


def from_popen(
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


def wait_started(broker: RunningBroker, ports: list[int]) -> None:
    try:
        for p in ports:
            wait_port(p, 20, f"broker {broker.name}")
    except RuntimeError:
        broker.stop()
        tail = broker.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"broker {broker.name} did not start; its log:\n{tail}") from None
    if not broker.alive():
        raise RuntimeError(f"broker {broker.name} exited at start; see {broker.log_path}")
