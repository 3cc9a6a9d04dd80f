"""Ports: the one ``free_port`` (with ``port_free``, ``port_open``) for whatever starts a process."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

# Ports handed out by this process: a second caller must not get one that was given out a
# moment ago and is not bound yet (the server that will bind it may still be starting).
_given: set[int] = set()
_given_lock = threading.Lock()
_LOWEST = 10_000


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; else the IANA range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49_152, 65_535


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, for a server this process is about to start.

    Chosen below the kernel's ephemeral range: a port from that range (what binding port 0
    returns) can be taken, between the choice and the server's bind, by any outgoing
    connection on the machine, and a busy test suite opens thousands. Below it only another
    listener can take it. Never the same port twice from one process.
    """
    low, high = _ephemeral_range()
    candidates = range(_LOWEST, low) if low - _LOWEST >= 1_000 else range(high + 1, 65_536)
    with _given_lock:
        for _ in range(200):
            port = random.choice(candidates)  # not a secret
            if port not in _given and port_free(port, host):
                _given.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range: ask the OS
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nobody listens on ``host:port``: we could bind it now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
