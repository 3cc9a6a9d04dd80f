"""Helper processes ("agents") that the bench drives over a JSON-lines pipe.

Load generators and clients run in their own processes so they neither share the GIL with the
bench nor with each other, and so each gets its own open-files budget (20,000 per process here).
The parent writes one JSON command per line to the agent's stdin and reads one JSON answer per
line from its stdout; the agent's stderr goes to a log file next to the results.

Child side: an agent module calls :func:`serve` with its command handlers.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class AgentError(RuntimeError):
    """An agent failed a command, died, or did not answer in time."""


class Agent:
    """Parent-side handle of one agent process."""

    def __init__(
        self,
        module: str,
        name: str,
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[str] = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env={**os.environ, **(env or {})},
        )
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"agent-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def send(self, cmd: str, **args: Any) -> None:
        if self.proc.poll() is not None:
            raise AgentError(
                f"agent {self.name} exited ({self.proc.returncode}); see {self.log_path}"
            )
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise AgentError(f"agent {self.name} is gone ({exc}); see {self.log_path}") from None

    def recv(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise AgentError(
                f"agent {self.name} did not answer within {timeout:.0f} s; see {self.log_path}"
            ) from None
        if line is None:
            self.proc.wait(5)
            raise AgentError(
                f"agent {self.name} exited ({self.proc.returncode}); see {self.log_path}"
            )
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise AgentError(f"agent {self.name}: {answer.get('error')}; see {self.log_path}")
        return answer

    def call(self, cmd: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        self.send(cmd, **args)
        return self.recv(timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(AgentError):
                self.send("quit")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Handler = Callable[[dict[str, Any]], dict[str, Any] | None]


def serve(handlers: dict[str, Handler]) -> None:
    """Child side: answer commands from stdin until ``quit`` or end of input."""
    out = sys.stdout
    # Nothing else may write to the protocol pipe.
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            cmd = msg.pop("cmd")
            if cmd == "quit":
                break
            handler = handlers.get(cmd)
            if handler is None:
                raise ValueError(f"unknown command {cmd!r}")
            answer = {"ok": True, **(handler(msg) or {})}
        except Exception as exc:
            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    if "quit" in handlers:
        handlers["quit"]({})
