"""Soak: a long run at a steady analysis rate with faults, watching memory and open files.

Its own PostgreSQL cluster, RabbitMQ node and broker (the machine's PostgreSQL and RabbitMQ
are shared with other suites, so only the private ones are restarted), one ``plantnotify
worker`` and the N8N stand-in (0 s). A feeder agent creates analyses as the API does (row,
image, job on RabbitMQ with confirms) at ``SOAK_RATE``/s; 2,000 subscribers (persistent MQTT 5
sessions, one per user) reconnect whenever they are dropped. Early in the run (before the
window whose growth is judged) RabbitMQ is restarted, then PostgreSQL, then the broker is
SIGKILLed and started again. Every minute: RSS and open files of every process, the load
average and the machine's CPU use since the previous sample (the run is too long for an
exclusive machine, so whatever else ran is on record beside the numbers).

Report: RSS and fd growth per process from the end of the first third of the run (minute 10
of 30) to the end, analyses lost (created but never Completed/Failed), final events never
delivered to their user's device, the longest time a device was away.

Opt-in (``plantnotify bench --scenario soak``), 30 minutes; ``PLANTNOTIFY_BENCH_SOAK_MINUTES``
shortens it (the fault times scale with it).
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import machine
from bench.context import BenchContext
from bench.plots import figure, save
from bench.private import PrivatePostgres, PrivateRabbit
from bench.procs import open_files, rss_kib
from bench.results import ScenarioResult
from bench.scenarios.realpath import leaf_image
from bench.stack import bench_settings, start_service
from plantnotify.broker.config import BrokerLayout, find_plugin
from plantnotify.broker.process import BrokerProcess
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from plantnotify.contracts.topics import analyses_filter
from plantnotify.db.session import make_engine, migrate
from plantnotify.net import free_port

NAME = "soak"
REQUIRES = ("worker.outbox",)
NEEDS_SERVICES = False  # private PostgreSQL and RabbitMQ
TITLE = "Soak: steady analyses with RabbitMQ/PostgreSQL restarts and a broker SIGKILL"
SOAK_RATE = 200
SUBSCRIBERS = 2000
EVENT_EXPIRY_SECONDS = 120
# When the faults happen, as fractions of the run (minutes 4, 6 and 8 of 30).
FAULTS = (("rabbitmq restart", 4 / 30), ("postgresql restart", 6 / 30), ("broker SIGKILL", 8 / 30))


def minutes() -> float:
    return float(os.environ.get("PLANTNOTIFY_BENCH_SOAK_MINUTES", "30"))


def steps(quick: bool) -> int:
    return 6


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    total_s = minutes() * 60
    sample_every = min(60.0, total_s / 10)
    rate = int(os.environ.get("PLANTNOTIFY_BENCH_SOAK_RATE", str(SOAK_RATE)))
    ctx.step("private PostgreSQL and RabbitMQ, broker")
    pg = PrivatePostgres().start()
    ctx.on_close(pg.stop)
    rabbit = PrivateRabbit(f"plantnotify-soak-{ctx.run_id}")
    ctx.on_close(rabbit.remove)
    rabbit.start()
    migrate(pg.url)
    data_dir = ctx.scratch("soak-broker")
    port, ws_port = free_port(), free_port()
    settings = bench_settings(
        ctx,
        database_url=pg.url,
        rabbitmq_url=rabbit.url,
        mqtt_host="127.0.0.1",
        mqtt_port=port,
        mqtt_ws_port=ws_port,
        mqtt_data_dir=data_dir,
        metrics_port_worker=free_port(),
        standin_port=free_port(),
        # The broker keeps each analysis' latest event retained until it expires; a short
        # expiry lets its memory reach a steady state within the run (production: 7 days).
        event_expiry_seconds=EVENT_EXPIRY_SECONDS,
    )
    layout = BrokerLayout(
        port=port, ws_port=ws_port, data_dir=data_dir, plugin_path=find_plugin(settings)
    )
    broker = BrokerProcess(settings, layout, log_path=data_dir / "mosquitto.log")
    broker.start()

    def stop_broker() -> None:
        broker.stop()

    ctx.on_close(stop_broker)
    ctx.step("worker, N8N stand-in, 2,000 subscribers")
    worker = start_service(
        ctx, "soak-worker", ["worker"], settings, ready_port=settings.metrics_port_worker
    )
    standin = start_service(
        ctx,
        "soak-n8n-standin",
        ["n8n-standin", "--port", str(settings.standin_port), "--delay", "0"],
        settings,
        ready_port=settings.standin_port,
    )
    users = [f"soak{i}-{ctx.run_id}" for i in range(SUBSCRIBERS)]
    signer = MqttSigner(key=ctx.secret, audience=ctx.audience)
    device_agents = []
    for part in range(2):
        agent = ctx.agent("soakdevices", f"soak-devices{part}")
        agent.call(
            "connect",
            timeout=180,
            port=port,
            connect_timeout=150,
            clients=[
                {
                    "client_id": f"{u}-dev",
                    "username": u,
                    "password": mint_mqtt_token(signer, u, int(total_s) + 3600),
                    "filter": analyses_filter(u),
                }
                for u in users[part::2]
            ],
        )
        device_agents.append(agent)
    feeder = ctx.agent("soakfeeder", "soak-feeder")

    def roles() -> dict[str, int | None]:
        return {
            "worker": worker.pid,
            "n8n-standin": standin.pid,
            "broker": broker.pid,
            "postgresql (postmaster)": next(iter(pg.pids()), None),
            "rabbitmq": next(iter(rabbit.pids()), None),
        }

    samples: list[dict[str, Any]] = []
    cpu_last = [machine.cpu_times()]

    def sample(t: float) -> None:
        row: dict[str, Any] = {"minute": round(t / 60, 2)}
        cpu_now = machine.cpu_times()
        row["load"] = {
            **machine.load_snapshot(),
            "machine_cpu_busy": machine.cpu_busy_fraction(cpu_last[0], cpu_now),
        }
        cpu_last[0] = cpu_now
        for role, pid in roles().items():
            try:
                row[role] = {"rss_kib": rss_kib(pid), "fds": open_files(pid)} if pid else None
            except OSError:
                row[role] = None
        row["devices"] = [a.call("status") for a in device_agents]
        row["feeder"] = feeder.call("status")
        samples.append(row)

    ctx.step(f"{rate} analyses/s for {minutes():.0f} min, faults at minutes {_fault_minutes()}")
    feeder.call(
        "start",
        users=users,
        rate=rate,
        seconds=total_s,
        image_b64=base64.b64encode(leaf_image()).decode(),
        database_url=pg.url,
        rabbitmq_url=rabbit.url,
        threads=8,
    )
    t0 = time.monotonic()
    faults_done: list[dict[str, Any]] = []
    pending = list(FAULTS)
    next_sample = 0.0
    while True:
        t = time.monotonic() - t0
        if t >= next_sample:
            sample(t)
            next_sample += sample_every
        if pending and t >= pending[0][1] * total_s:
            name, _ = pending.pop(0)
            began = time.monotonic()
            if name.startswith("rabbitmq"):
                rabbit.restart()
            elif name.startswith("postgresql"):
                pg.restart()
            else:
                broker.kill()
                broker.start()
            faults_done.append(
                {"fault": name, "minute": round(t / 60, 2), "seconds": time.monotonic() - began}
            )
        if t >= total_s:
            break
        time.sleep(0.5)
    ctx.step("draining: every analysis finished and delivered?")
    fed = feeder.call("finish", timeout=900)
    created: list[tuple[str, str]] = [(a, u) for a, u in fed["created"]]
    ids = [aid for aid, _ in created]
    lost = _unfinished(pg.url, ids, wait=180)
    delivered: list[dict[str, Any]] = []
    for part, agent in enumerate(device_agents):
        mine = {u for u in users[part::2]}
        expect = [aid for aid, uid in created if uid in mine]
        delivered.append(agent.call("collect", timeout=300, expect=expect, wait=120))
    sample(time.monotonic() - t0)
    missing = sum(len(d["missing"]) for d in delivered)

    ctx.step("summarising")
    judge_from = next((s for s in samples if s["minute"] >= total_s / 60 / 3), samples[0])
    last = samples[-1]
    growth: dict[str, Any] = {}
    for role in roles():
        a, b = judge_from.get(role), last.get(role)
        if a and b:
            growth[role] = {
                "rss_kib_from": a["rss_kib"],
                "rss_kib_to": b["rss_kib"],
                "rss_growth_pct": round((b["rss_kib"] - a["rss_kib"]) / a["rss_kib"] * 100, 2),
                "fds_from": a["fds"],
                "fds_to": b["fds"],
            }
    result.series["samples"] = samples
    result.series["faults"] = faults_done
    result.series["growth"] = growth
    result.metrics.update(
        {
            "minutes": minutes(),
            "rate": rate,
            "subscribers": SUBSCRIBERS,
            "analyses_created": len(ids),
            "analyses_lost": len(lost),
            "events_undelivered": missing,
            "longest_outage_s": round(max(d["longest_outage_s"] for d in delivered), 2),
            "max_rss_growth_pct": max((g["rss_growth_pct"] for g in growth.values()), default=None),
            "fd_growth": {r: g["fds_to"] - g["fds_from"] for r, g in growth.items()},
            "feeder_retries": fed["retries"],
            "loadavg_1m_max": max((s["load"]["loadavg_1m"] or 0.0 for s in samples), default=None),
            "loadavg_1m_mean": round(
                sum(s["load"]["loadavg_1m"] or 0.0 for s in samples) / len(samples), 2
            ),
        }
    )
    result.notes.append(
        f"growth judged from minute {judge_from['minute']} to minute {last['minute']}; "
        "restarted processes (broker, PostgreSQL, RabbitMQ) are measured by role (their new "
        f"pid); PostgreSQL = its postmaster; events expire after {EVENT_EXPIRY_SECONDS} s (the "
        "broker's retained state is bounded by it)."
    )


def _fault_minutes() -> str:
    return ", ".join(f"{f * minutes():.1f}" for _, f in FAULTS)


def _unfinished(database_url: str, ids: list[str], wait: float) -> list[str]:
    """Analyses still ``Processing`` after up to ``wait`` seconds."""
    engine = make_engine(database_url, pool_size=1)
    deadline = time.monotonic() + wait
    try:
        while True:
            with engine.connect() as conn:
                left = [
                    r[0]
                    for r in conn.execute(
                        text(
                            "SELECT id FROM analyses WHERE status = 'Processing' AND id = ANY(:i)"
                        ),
                        {"i": ids},
                    )
                ]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(2)
    finally:
        engine.dispose()


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    samples = result.series["samples"]
    fig, (rss_ax, fd_ax, load_ax) = figure(
        "Soak: memory and open files per process, machine load", ncols=3, width=6
    )
    roles = [k for k in samples[0] if k not in ("minute", "devices", "feeder", "load")]
    for role in roles:
        xs = [s["minute"] for s in samples if s.get(role)]
        rss_ax.plot(xs, [s[role]["rss_kib"] / 1024 for s in samples if s.get(role)], label=role)
        fd_ax.plot(xs, [s[role]["fds"] for s in samples if s.get(role)], label=role)
    for fault in result.series["faults"]:
        for ax in (rss_ax, fd_ax, load_ax):
            ax.axvline(fault["minute"], color="#999", lw=0.7, ls=":")
    rss_ax.set_xlabel("minute")
    rss_ax.set_ylabel("RSS (MiB)")
    fd_ax.set_xlabel("minute")
    fd_ax.set_ylabel("open files")
    load_ax.plot(
        [s["minute"] for s in samples],
        [s["load"]["loadavg_1m"] for s in samples],
        label="load average (1 min)",
    )
    load_ax.plot(
        [s["minute"] for s in samples],
        [(s["load"]["machine_cpu_busy"] or 0.0) * (os.cpu_count() or 1) for s in samples],
        label="busy cores",
    )
    load_ax.set_xlabel("minute")
    load_ax.legend(fontsize=7)
    rss_ax.legend(fontsize=7)
    return [save(fig, out_dir / f"{NAME}.png")]
