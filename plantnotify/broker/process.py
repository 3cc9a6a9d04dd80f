"""Starting and stopping our Mosquitto (with the plugin) as a child process.

Used by ``plantnotify broker``, the local stack and the test fixtures. Ports: a port taken by
another program (a system Mosquitto on 1883, say) is replaced by a free one, unless it was set
explicitly (``MQTT_PORT`` / ``MQTT_WS_PORT`` or an explicit Settings value): then start-up fails
with a message that says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from plantnotify.broker.config import BrokerLayout, find_plugin, write_config
from plantnotify.net import free_port, port_free
from plantnotify.settings import Settings

READY_MARKER = " running"  # "mosquitto version 2.0.11 running"
PORT_ENV = {"mqtt_port": "MQTT_PORT", "mqtt_ws_port": "MQTT_WS_PORT"}


class BrokerError(RuntimeError):
    """The broker could not be started or stopped; the message says what to do."""


class BrokerStartError(BrokerError):
    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message + (f"\n--- mosquitto log (tail) ---\n{log}" if log else ""))
        self.log = log


@dataclass(frozen=True)
class PortChoice:
    port: int
    ws_port: int
    notes: tuple[str, ...] = ()


def choose_ports(settings: Settings) -> PortChoice:
    """The configured ports, or free ones for those taken and not set explicitly."""
    chosen: dict[str, int] = {}
    notes: list[str] = []
    host = settings.mqtt_bind_host
    for name, env in PORT_ENV.items():
        wanted: int = getattr(settings, name)
        if port_free(wanted, host) and wanted not in chosen.values():
            chosen[name] = wanted
        elif name in settings.model_fields_set:
            raise BrokerError(
                f"{env}={wanted} is already in use by another program; stop that program or "
                f"set {env} to a free port (or unset it to let plantnotify pick one)"
            )
        else:
            chosen[name] = free_port(host)
            notes.append(f"{env} {wanted} is taken by another program; using {chosen[name]}")
    return PortChoice(chosen["mqtt_port"], chosen["mqtt_ws_port"], tuple(notes))


class BrokerProcess:
    """One mosquitto process for a layout; ``start`` returns once both listeners accept."""

    def __init__(
        self,
        settings: Settings,
        layout: BrokerLayout,
        *,
        log_path: Path | None = None,
        wrapper: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        mosquitto: str = "mosquitto",
        port_notes: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.port_notes = tuple(port_notes)
        self.layout = layout
        self.log_path = log_path
        self.wrapper = list(wrapper)
        self.env = dict(env) if env is not None else None
        self.mosquitto = mosquitto
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_start = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: object) -> BrokerProcess:
        """Ports chosen as described above, data in ``MQTT_DATA_DIR``, the plugin auto-found."""
        ports = choose_ports(settings)
        layout = BrokerLayout(
            port=ports.port,
            ws_port=ports.ws_port,
            data_dir=settings.mqtt_data_dir.resolve(),
            plugin_path=find_plugin(settings),
        )
        return cls(settings, layout, port_notes=ports.notes, **kwargs)  # type: ignore[arg-type]

    @property
    def port(self) -> int:
        return self.layout.port

    @property
    def ws_port(self) -> int:
        return self.layout.ws_port

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def _log_since_start(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(self._log_start)
            return f.read().decode(errors="replace")

    def start(self, timeout: float = 15.0) -> None:
        if self.running():
            raise BrokerError("broker already running")
        config = write_config(self.settings, self.layout)
        stdout: IO[bytes] | None = None
        if self.log_path is not None:
            self._log_file = self.log_path.open("ab")
            self._log_start = self._log_file.tell()
            stdout = self._log_file
        self.proc = subprocess.Popen(
            [*self.wrapper, self.mosquitto, "-c", str(config)],
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it cleanly
        )
        self._wait_ready(timeout)
        self.layout.runtime_path.write_text(
            json.dumps({"pid": self.proc.pid, "port": self.port, "wsPort": self.ws_port})
        )

    def _ready(self) -> bool:
        if self.log_path is not None:
            return READY_MARKER in self._log_since_start()
        return all(_accepts(self.settings.mqtt_bind_host, p) for p in (self.port, self.ws_port))

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._close_log()
                raise BrokerStartError(
                    f"mosquitto exited with status {rc} during start-up",
                    _tail(self._log_since_start()),
                )
            if self._ready():
                return
            time.sleep(0.02)
        self.kill()
        raise BrokerStartError(
            f"mosquitto did not start within {timeout:.0f} s", _tail(self._log_since_start())
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (Mosquitto saves its database), SIGKILL if it does not exit in time."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL: nothing is saved (crash test)."""
        return self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: int, timeout: float) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            except ProcessLookupError:
                pass
        self._close_log()
        with contextlib.suppress(FileNotFoundError):
            self.layout.runtime_path.unlink()
        return proc.returncode

    def wait(self) -> int:
        assert self.proc is not None
        return self.proc.wait()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def read_runtime(data_dir: Path) -> dict[str, int] | None:
    """Ports of a broker started from ``data_dir`` that is still running, else None."""
    path = data_dir / "broker.json"
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
        return {"port": int(info["port"]), "wsPort": int(info["wsPort"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None
