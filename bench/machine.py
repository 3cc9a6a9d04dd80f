"""What the numbers were measured on: hardware, kernel, versions, and how busy the machine was."""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_mib() -> int | None:
    match = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
    return int(match.group(1)) // 1024 if match else None


def _version(cmd: list[str], pattern: str) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else None


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def load_snapshot() -> dict[str, Any]:
    """Load averages and the busiest processes right now (other people's test runs show here)."""
    load = _read("/proc/loadavg").split()
    top: list[str] = []
    try:
        out = subprocess.run(
            ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        top = [" ".join(line.split()) for line in out.stdout.splitlines()[:5]]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "loadavg_1m": float(load[0]) if load else None,
        "loadavg_5m": float(load[1]) if len(load) > 1 else None,
        "busiest_processes_pcpu": top,
    }


def cpu_busy_fraction(before: list[int], after: list[int]) -> float | None:
    """Share of all CPU time that was not idle between two ``/proc/stat`` samples."""
    if not before or not after:
        return None
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])
    return round(1 - idle / total, 3) if total > 0 else None


def cpu_times() -> list[int]:
    first = _read("/proc/stat").splitlines()[:1]
    return [int(x) for x in first[0].split()[1:]] if first else []


def describe() -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "ram_mib": _mem_total_mib(),
        "kernel": platform.release(),
        "os": _read("/etc/os-release").split('PRETTY_NAME="')[-1].split('"')[0]
        or platform.system(),
        "open_files_limit": {"soft": soft, "hard": hard},
        "versions": {
            "python": platform.python_version(),
            "mosquitto": _version(["mosquitto", "-h"], r"mosquitto version (\S+)"),
            "paho-mqtt": _dist_version("paho-mqtt"),
            "amqtt": _dist_version("amqtt"),
            "postgresql": _version(["psql", "--version"], r"(\d+\.\d+)"),
            "rabbitmq": _rabbitmq_version(),
            "plantnotify": _dist_version("plantnotify"),
        },
    }


def _rabbitmq_version() -> str | None:
    for path in sorted(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*")):
        return path.name.split("-", 1)[1]
    return None
