"""The container tests run only from `make test-containers` (they start an engine, build every
image and run the compose stack: minutes, not part of `make test`). Outside it this directory
collects nothing; nothing is skipped."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

ENABLE = "PLANTNOTIFY_CONTAINER_TESTS"

if os.environ.get(ENABLE) != "1":
    collect_ignore_glob = ["test_*.py"]

# Filled by the tests, printed at the end of the run and written next to the test artifacts.
REPORT: dict[str, Any] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    terminalreporter.section("containers: measurements")
    for key, value in REPORT.items():
        terminalreporter.write_line(f"{key}: {json.dumps(value)}")


@pytest.fixture(scope="session")
def report() -> dict[str, Any]:
    return REPORT
