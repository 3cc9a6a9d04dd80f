"""Sustained outbox → broker → device throughput with two worker processes sharing the outbox.

The committer agent commits finished analyses (the worker's result transaction: analysis ->
Completed plus its AnalysisCompleted outbox row) at a fixed rate for a minute, the jobs that
are due at once in one transaction (a group commit: without it, one Python process issuing
three round trips per analysis on a shared 2-core machine offered no more than ~650/s); the
outbox is published by two ``plantnotify worker`` processes, each leading its share of the
outbox partitions over ``OUTBOX_CONNECTIONS`` MQTT connections. Each user has one MQTT/TCP device. Per second of
the run: how many events arrived and the worst commit → device latency of the events
committed in that second (the lag); overall commit → device p50/p99/max and what is lost.
"""

from __future__ import annotations

from pathlib import Path

from bench.context import BenchContext
from bench.plots import figure, save
from bench.procs import cpu_seconds
from bench.results import ScenarioResult
from bench.stack import device_agent, our_stack, start_service
from bench.stats import latencies_ms, summarize
from plantnotify.net import free_port

NAME = "sustained"
REQUIRES = ("worker.outbox",)
NEEDS_SERVICES = True
TITLE = "Sustained commit → device throughput, two worker processes sharing the outbox"
USERS = [f"sus{i}" for i in range(40)]
LAG_LIMIT_MS = 1000.0


def steps(quick: bool) -> int:
    return 4


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    rate, seconds = ctx.pick((500, 1.5), (2000, 60.0))
    ctx.step("database, vhost, broker, two workers")
    stack = our_stack(ctx)
    settings = stack.settings.model_copy(update={"metrics_port_worker": free_port()})
    second = start_service(
        ctx,
        "sustained-worker2",
        ["worker"],
        settings,
        ready_port=settings.metrics_port_worker,
        wait=False,
    )
    committer = ctx.agent("committer", "sustained-committer")
    ctx.step("connecting devices")
    devices = device_agent(ctx, "sustained-devices", stack.broker.port, USERS)
    committer.call("connect", database_url=settings.database_url)
    for service in (stack.worker, second):
        service.wait_ready()
    count = int(rate * seconds)
    committer.call("prepare", timeout=600, users=USERS, prefix="sus-", count=count)
    ctx.step(f"{rate} commits/s for {seconds:.0f} s")
    pids = {"worker1": stack.worker.pid, "worker2": second.pid, "broker": stack.broker.pid}
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    answer = committer.call(
        "run", timeout=seconds * 5 + 300, prefix="sus-", rate=rate, threads=8, group=True
    )
    got = devices.call("collect", timeout=400, expect=len(answer["committed"]), wait=120)
    ctx.step("summarising")
    committed: dict[str, int] = answer["committed"]
    received: dict[str, int] = got["received"]
    lat, missing = latencies_ms(committed, received)
    start = min(committed.values()) if committed else 0
    per_second: dict[int, dict[str, float]] = {}
    for key, t0 in committed.items():
        sec = int((t0 - start) // 1_000_000_000)
        row = per_second.setdefault(sec, {"committed": 0, "delivered": 0, "lag_ms": 0.0})
        row["committed"] += 1
        t1 = received.get(key)
        if t1 is not None:
            row["delivered"] += 1
            row["lag_ms"] = max(row["lag_ms"], (t1 - t0) / 1e6)
    arrivals = sorted(received.values())
    span = (arrivals[-1] - arrivals[0]) / 1e9 if len(arrivals) > 1 else 0.0
    summary = summarize(lat)
    result.series["per_second"] = [per_second[s] | {"second": s} for s in sorted(per_second)]
    result.series["commit_to_device_ms"] = summary
    result.metrics.update(
        {
            "offered_rate": rate,
            "seconds": seconds,
            "achieved_commit_rate": round(answer["achieved_rate"] or 0, 1),
            "delivered_events_per_s": round(len(arrivals) / span, 1) if span else None,
            "p50_ms": summary.get("p50"),
            "p99_ms": summary.get("p99"),
            "max_lag_ms": summary.get("max"),
            "missing": missing,
            "duplicates": got["duplicates"],
            "worker_processes": 2,
            "commit_transactions": answer.get("transactions"),
            "mean_group": round(answer.get("mean_group") or 0, 1),
            "commit_ms_p99": answer.get("commit_ms_p99"),
            "schedule_lag_p99_ms": answer.get("schedule_lag_p99_ms"),
            "cpu_seconds_per_1000": {
                k: round((cpu_seconds(p) - cpu0[k]) / max(1, count) * 1000, 3)
                for k, p in pids.items()
            },
        }
    )
    result.notes.append(
        f"{len(USERS)} users with one MQTT/TCP device each; the committer (8 PostgreSQL "
        f"connections, group commits of the jobs due at once) offers {rate}/s for {seconds:.0f} s; two worker processes share the "
        f"outbox partitions; lag limit {LAG_LIMIT_MS:.0f} ms."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    rows = result.series["per_second"]
    fig, ax = figure("Sustained commits → devices, per second (two workers)")
    xs = [r["second"] for r in rows]
    ax.plot(xs, [r["committed"] for r in rows], label="committed/s", color="#4c72b0")
    ax.plot(xs, [r["delivered"] for r in rows], label="delivered/s", color="#55a868")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("events per second")
    lag = ax.twinx()
    lag.plot(xs, [r["lag_ms"] for r in rows], color="#c44e52", label="worst lag (ms)")
    lag.set_ylabel("worst commit → device (ms)")
    ax.legend(loc="upper left", fontsize=7)
    lag.legend(loc="upper right", fontsize=7)
    return [save(fig, out_dir / f"{NAME}.png")]
