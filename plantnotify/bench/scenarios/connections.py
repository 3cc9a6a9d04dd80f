"""Connections: N idle authenticated connections on one broker, per authentication method.

Three Mosquitto variants from the same configuration file, one after the other (see
``plantnotify.bench.stack``): ``plain`` (anonymous: what an idle connection costs Mosquitto
itself), ``password_file`` (Mosquitto's own PBKDF2 password file) and ``plugin`` (ours: JWT,
per-user ACL and session tracking). The clients are spread over agent processes (each process
may hold at most 20,000 open files here, the broker included, which caps one broker just
below 20,000 connections). Measured on the broker process: RSS per connection, CPU time per
connect+auth; at the clients: connect rate and connect latency; afterwards every connection is
PINGed to count the ones really alive.
"""

from __future__ import annotations

import resource
import secrets
from pathlib import Path
from typing import Any

from plantnotify.bench.agents.holder import derived_password
from plantnotify.bench.brokers import start_broker, write_password_file
from plantnotify.bench.connections import hold_connections
from plantnotify.bench.context import BenchContext
from plantnotify.bench.plots import figure, save
from plantnotify.bench.results import ScenarioResult

NAME = "connections"
TITLE = "Idle authenticated connections: memory and connect+auth rate"
KINDS = ("plain", "password_file", "plugin")
FULL_N = 19_900  # the broker's own 20,000-file cap minus its listeners, logs and database


def steps(quick: bool) -> int:
    return 1 + 2 * len(KINDS)


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    _, cap = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = ctx.pick(500, min(FULL_N, cap - 100))
    ctx.step(f"password file for {n} users")
    seed = secrets.token_hex(8)
    pwfile = ctx.scratch("connections") / "passwords"
    write_password_file(pwfile, {f"idle{i}": derived_password(seed, f"idle{i}") for i in range(n)})
    per_kind: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        ctx.step(f"{kind}: starting")
        broker = start_broker(ctx, kind, f"{kind}-connections", password_file=pwfile)
        if kind == "plugin":
            creds: dict[str, Any] = {"mode": "jwt", "secret": ctx.secret, "audience": ctx.audience}
        else:
            creds = {"mode": "password", "seed": seed}
        ctx.step(f"{kind}: {n} connections")
        try:
            per_kind[kind] = hold_connections(
                ctx, broker, n=n, label=kind, credentials=creds, user_prefix="idle"
            )
            per_kind[kind]["open_files_cap"] = cap
        finally:
            broker.stop()
    result.series = per_kind
    m = result.metrics
    for kind, r in per_kind.items():
        m[f"{kind}_bytes_per_conn"] = r["bytes_per_conn"]
        m[f"{kind}_connect_rate"] = r["connect_rate"]
        m[f"{kind}_broker_us_per_connect"] = r["broker_cpu_us_per_connect"]
    plugin, plain = per_kind["plugin"], per_kind["plain"]
    if plugin["bytes_per_conn"] is not None and plain["bytes_per_conn"] is not None:
        m["plugin_adds_bytes_per_conn"] = round(
            plugin["bytes_per_conn"] - plain["bytes_per_conn"], 1
        )
    m["connections_one_broker"] = plugin["alive_after"]
    m["fraction_of_open_files_cap"] = round(plugin["alive_after"] / cap, 3)
    result.notes.append(
        f"N = {n} per variant (quick runs use 500; the full run goes to {FULL_N}, just under "
        f"the {cap:,} open files one process may have here). Memory = broker RSS after - before, "
        "over connections alive after the test; connect rate = connections / (last CONNACK - "
        "first attempt) with clients and broker sharing the two cores; broker CPU per connect "
        "is the broker-bound cost independent of the clients."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    fig, axes = figure("Idle authenticated connections on one Mosquitto", ncols=3, width=3.6)
    kinds = list(result.series)
    panels = [
        ("memory per connection (bytes)", "bytes_per_conn"),
        ("connect+auth rate (/s)", "connect_rate"),
        ("broker CPU per connect (µs)", "broker_cpu_us_per_connect"),
    ]
    colours = {"plain": "#999999", "password_file": "#dd8452", "plugin": "#4c72b0"}
    for ax, (title, key) in zip(axes, panels, strict=True):
        values = [result.series[k][key] or 0 for k in kinds]
        ax.bar(kinds, values, color=[colours.get(k, "#4c72b0") for k in kinds])
        ax.set_title(title, fontsize=9)
        for i, v in enumerate(values):
            ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)
    return [save(fig, out_dir / f"{NAME}.png")]
