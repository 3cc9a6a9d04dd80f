"""Ports, waiting, and what a running process costs (resident memory, CPU time)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from plantnotify.net import port_open

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port} within {timeout:.0f} s")


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[11], fields[12] are utime and stime (14th and 15th of the full line)
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def open_files(pid: int) -> int:
    """File descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle_rss(pid: int, seconds: float = 1.0) -> int:
    """RSS after the process stopped growing for a moment (allocations settle after a burst)."""
    last = rss_kib(pid)
    deadline = time.monotonic() + seconds * 5
    while time.monotonic() < deadline:
        time.sleep(seconds / 2)
        now = rss_kib(pid)
        if now == last:
            return now
        last = now
    return last
