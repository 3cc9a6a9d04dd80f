"""Baseline: plain Mosquitto's own publish → subscribe latency, same clients, same run.

Our Mosquitto configuration with the plugin lines removed and anonymous access allowed (so it
differs from the production broker by the plugin alone); the bench's publisher client sends retained QoS-1
events round-robin to 10 users at 500 events/s (the rate of the first target) and 2,000/s;
one device per user per transport (MQTT/TCP and WebSocket) receives them. The end-to-end
latency target is a multiple of this p99, so both come from the same machine at the same time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.brokers import start_broker
from bench.context import BenchContext
from bench.plots import figure, save
from bench.pubsub import start_rig
from bench.results import ScenarioResult

NAME = "mosquitto_baseline"
TITLE = "Plain Mosquitto publish → subscribe (baseline)"
RATES = (500, 2000)
USERS = [f"base{i}" for i in range(10)]


def steps(quick: bool) -> int:
    return 2 + len(RATES)


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    seconds = ctx.pick(1.0, 10.0)
    ctx.step("starting plain Mosquitto")
    broker = start_broker(ctx, "plain", "plain-baseline")
    ctx.step("connecting clients")
    rig = start_rig(
        ctx,
        broker,
        label="baseline",
        users=USERS,
        publisher=("bench-publisher", "bench", "unused"),
        device_credentials=lambda user: (user, "unused"),
    )
    rig.run(rate=200, seconds=ctx.pick(0.5, 1.0), key_prefix="warm")  # warm-up, not recorded
    steps_out: list[dict[str, Any]] = []
    for rate in RATES:
        ctx.step(f"{rate} events/s for {seconds:.0f} s")
        step = rig.run(rate=rate, seconds=seconds, key_prefix=f"r{rate}-")
        samples = step.pop("_samples")
        steps_out.append(step)
        result.series[f"samples_tcp_{rate}"] = [round(x, 4) for x in samples["tcp"]]
        for transport in ("tcp", "ws"):
            result.metrics[f"{'p99' if transport == 'tcp' else 'ws_p99'}_ms_at_{rate}"] = step[
                transport
            ].get("p99")
        result.metrics[f"p50_ms_at_{rate}"] = step["tcp"].get("p50")
    result.series["steps"] = steps_out
    result.notes.append(
        f"{len(USERS)} users, one device per user per transport, MQTT 5, retained QoS 1, "
        f"~400-byte AnalysisCompleted payloads, {seconds:.0f} s per rate; latency = device "
        "arrival - publisher's publish() call (CLOCK_MONOTONIC, shared by all processes)."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    fig, ax = figure("Plain Mosquitto: publish → subscribe latency (ms)")
    data, labels = [], []
    for step in result.series["steps"]:
        for transport in ("tcp", "ws"):
            s = step[transport]
            if s.get("count"):
                labels.append(f"{transport} @{step['offered_rate']:.0f}/s")
                data.append([s["p50"], s["p95"], s["p99"]])
    xs = range(len(labels))
    for i, name in enumerate(("p50", "p95", "p99")):
        ax.bar([x + i * 0.27 for x in xs], [d[i] for d in data], width=0.27, label=name)
    ax.set_xticks([x + 0.27 for x in xs], labels)
    ax.set_ylabel("ms")
    ax.legend()
    return [save(fig, out_dir / f"{NAME}.png")]
