"""The web app's pure logic (de-duplication, merge rules, back-off) under node's test runner.

The browser tests (test_browser.py) drive the whole app; these pin the decisions behind it
with cases that are hard to produce on demand in a browser (outbox republish after a reload,
a corrupted localStorage, clock-ordered cursors).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"


def test_node_unit_tests_pass() -> None:
    proc = subprocess.run(
        ["make", "-s", "-C", str(WEB), "test"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "# fail 0" in output, output
    passed = [line for line in output.splitlines() if line.startswith("# pass ")]
    assert passed and int(passed[0].split()[-1]) >= 10, output
