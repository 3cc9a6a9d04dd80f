"""Graceful shutdown: at the end of the full run (tests/deploy/conftest.py) every part was sent
SIGTERM at once, the way `docker compose stop` does. Each must have exited 0, well inside
Docker's stop timeout, without a traceback."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import STOP_WITHIN_SECONDS, StackRun


@pytest.mark.parametrize(
    "name", ["broker", "api", "worker", "bridge", "n8n-standin", "fcm-emulator"]
)
def test_part_exits_0_promptly_on_sigterm(stack_run: StackRun, name: str) -> None:
    part = stack_run.parts[name]
    assert part.proc is not None and part.exit_seconds is not None
    assert part.proc.returncode == 0, f"{name} exited {part.proc.returncode}:\n{part.log()}"
    assert part.exit_seconds < STOP_WITHIN_SECONDS
    assert "Traceback" not in part.log(), part.log()
