"""A bench runner that is SIGKILLed takes its whole stack with it (bench/supervisor.py).

The soak scenario starts the most varied set of processes: a PostgreSQL cluster that ``pg_ctl``
leaves running on its own, a RabbitMQ node and a broker in sessions of their own, the worker,
the N8N stand-in and agents. The moment the stand-in (started last, directly by the runner) shows,
the runner is SIGKILLed, as a test's timeout would; nothing it started may survive, not even a
process younger than the watchdog's last scan, and the private database directory goes too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of ``pid``, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every process below ``root`` now."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            table[int(entry)] = info
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, started, _) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def _survivors(seen: dict[int, int]) -> dict[int, str]:
    out = {}
    for pid, started in seen.items():
        info = _stat(pid)
        if info is not None and info[1] == started and info[2] != "Z":
            cmd = _cmdline(pid)
            if "epmd" not in cmd.split(" ")[0]:  # Erlang's shared name service is spared
                out[pid] = cmd
    return out


@pytest.mark.timeout(240)
def test_sigkilled_bench_leaves_no_process_behind(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PLANTNOTIFY_BENCH_SOAK_MINUTES": "5",
        "PLANTNOTIFY_BENCH_SOAK_RATE": "5",
    }
    runner = subprocess.Popen(
        [sys.executable, "-m", "plantnotify.cli", "bench", "--scenario", "soak", "--out", tmp_path],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and runner.poll() is None:
            seen.update(_descendants(runner.pid))
            commands = [_cmdline(pid) for pid in seen]
            # The stand-in is started right after the worker is ready: killing the runner as
            # soon as it shows catches a process the watchdog's scans have not seen yet.
            if any("plantnotify.cli n8n-standin" in c for c in commands):
                break
            time.sleep(0.1)
        assert runner.poll() is None, "the bench ended before its N8N stand-in started"
        commands = [_cmdline(pid) for pid in seen]
        assert any("plantnotify.cli worker" in c for c in commands), commands
        # The postmaster outlives pg_ctl: it is still below the runner (a child subreaper).
        postmaster = [c for c in commands if " -D " in c and "postgres" in c.split(" ")[0]]
        assert postmaster, commands
        assert any("mosquitto" in c for c in commands), commands
        assert any("beam" in c or "rabbitmq" in c for c in commands), commands
        data_dir = Path(postmaster[0].split(" -D ")[1].split(" ")[0])
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)

        deadline = time.monotonic() + 30
        while _survivors(seen) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _survivors(seen) == {}
        while data_dir.parent.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not data_dir.parent.exists(), "the private PostgreSQL directory was left behind"
    finally:
        if runner.poll() is None:
            runner.kill()
        for pid in _survivors(seen):  # never leave the stack running, even when failing
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
