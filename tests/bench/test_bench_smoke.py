"""``plantnotify bench --quick`` runs to the end and writes its results.

A smoke run only: it asserts that every scenario ran against the real stack and that the JSON
and plots were written, never what the numbers are (numbers from a shared two-core machine are
not a pass/fail criterion; the bench prints them against the targets instead).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.scenarios import ORDER

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_quick_bench_completes_and_writes_results(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "plantnotify.cli", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    elapsed = time.monotonic() - started
    errors = "\n".join(p.read_text()[-3000:] for p in (tmp_path / "logs").glob("*.error.txt"))
    assert proc.returncode == 0, (
        f"bench failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{errors}"
    )

    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["quick"] is True
    assert list(report["scenarios"]) == ORDER
    for name, scenario in report["scenarios"].items():
        assert scenario["status"] in ("ok", "unavailable"), (name, scenario.get("error"))
        if scenario["status"] == "ok":
            assert scenario["metrics"], f"{name} recorded no metrics"
    assert report["machine"]["cpu_cores"] >= 1
    assert report["targets"], "no target was evaluated"
    assert list(tmp_path.glob("*.png")), "no plot was written"
    print(f"quick bench: {elapsed:.0f} s")
