"""Failover on the NATS cluster: the chaos run's numbers, per kill.

Runs the cluster chaos run (``tests/chaos``, the same code as ``make test-chaos``: a 3-node
cluster with its auth callouts, 2 workers, 2 bridges, the N8N stand-in, devices with persistent
QoS-1 sessions spread over the nodes, analyses queued at a steady rate) and records what it
measured. Each of these is SIGKILLed in its own window of the load: the node the services
connect to first, an auth callout, a worker, a bridge. Per kill: devices that saw a gap, the
longest gap and when the last device was back (seconds after the kill), queue → device latency
(p50/p99/max) of the analyses queued in that window beside the window before any kill, and the
CONNECTs a probe saw refused. The run itself fails (and so does this scenario, after recording
its numbers) if an analysis is lost, a persistent session misses a terminal event within
``PLANTNOTIFY_CHAOS_DRAIN_SECONDS`` (300) or a device does not come back.

Opt-in (``plantnotify bench --scenario chaos``). Sizes: quick 60 devices at 20/s for 12 s;
full the issue's 500 devices at 200/s for 30 s; ``PLANTNOTIFY_CHAOS_DEVICES`` / ``_RATE`` /
``_SECONDS`` override both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.context import BenchContext
from bench.plots import figure, save
from bench.results import ScenarioResult

NAME = "chaos"
REQUIRES = ("worker.outbox", "bridge.service")
NEEDS_SERVICES = True
TITLE = "NATS cluster failover: SIGKILL a node, an auth callout, a worker, a bridge under load"
ROOT = Path(__file__).resolve().parents[2]
QUICK = {"devices": 60, "rate": 20, "seconds": 12}
FULL = {"devices": 500, "rate": 200, "seconds": 30}
PER_KILL = (
    "device_gaps",
    "longest_device_gap_s",
    "last_device_back_s_after",
    "queue_to_device_p50_s",
    "queue_to_device_p99_s",
    "queue_to_device_max_s",
    "probe_refused",
    "probe_refused_until_s_after",
)


def steps(quick: bool) -> int:
    return 1


def sizes(quick: bool) -> dict[str, int]:
    base = dict(QUICK if quick else FULL)
    for key in base:
        value = os.environ.get(f"PLANTNOTIFY_CHAOS_{key.upper()}")
        if value:
            base[key] = int(float(value))
    return base


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    size = sizes(ctx.quick)
    report_path = ctx.scratch("chaos") / "report.json"
    log_path = ctx.log_dir / "chaos-run.log"
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    ctx.step(
        f"chaos run: {size['devices']} devices, {size['rate']} analyses/s, {size['seconds']} s"
    )
    env = {
        **os.environ,
        "PLANTNOTIFY_CHAOS": "1",
        "PLANTNOTIFY_CHAOS_DEVICES": str(size["devices"]),
        "PLANTNOTIFY_CHAOS_RATE": str(size["rate"]),
        "PLANTNOTIFY_CHAOS_SECONDS": str(size["seconds"]),
        "PLANTNOTIFY_CHAOS_REPORT": str(report_path),
    }
    with log_path.open("wb") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/chaos", "-s", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if not report_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"the chaos run failed before its report (exit {proc.returncode}):\n{tail}"
        )
    report: dict[str, Any] = json.loads(report_path.read_text())
    result.series = report
    m = result.metrics
    for key in (
        "devices",
        "analyses",
        "rate_per_s",
        "achieved_rate_per_s",
        "analyses_lost",
        "events_missing_on_devices",
        "devices_not_connected",
        "longest_device_gap_s",
        "all_done_s_after_first_kill",
        "setup_seconds",
        "devices_refused_at_subscribe",
        "device_connects_unanswered_at_start",
    ):
        m[key] = report.get(key)
    for what, numbers in report["kills"].items():
        for key in PER_KILL:
            m[f"{what}_{key}"] = numbers.get(key)
    m["run_passed"] = proc.returncode == 0
    result.notes.append(
        "Everything on this one machine (3 NATS nodes, 3 callouts, 2 workers, 2 bridges, the "
        "devices); 'before' is the window before the first kill (the baseline). A device gap "
        "counts in the window it began in; 'last back' is seconds after that window's kill."
    )
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"the chaos run failed (numbers recorded above):\n{tail}")


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    kills = result.series.get("kills", {}) if result.series else {}
    if not kills:
        return []
    fig, axes = figure("NATS cluster chaos: per kill", ncols=2, width=4.2)
    names = list(kills)
    axes[0].bar(names, [kills[k].get("longest_device_gap_s") or 0 for k in names])
    axes[0].set_title("longest device gap (s)", fontsize=9)
    axes[1].bar(names, [kills[k].get("queue_to_device_max_s") or 0 for k in names])
    axes[1].set_title("queue → device max (s)", fontsize=9)
    return [save(fig, out_dir / f"{NAME}.png")]
