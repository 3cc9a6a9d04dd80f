"""Ports and waiting, for tests that start real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from plantnotify.net import free_port, port_open

__all__ = ["free_port", "port_open", "wait_for"]

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | bool | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value  # type: ignore[return-value]
        except Exception as exc:  # the check may race the thing it waits for
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")
