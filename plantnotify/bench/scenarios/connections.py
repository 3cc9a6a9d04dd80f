"""Connections: N idle authenticated connections on one broker, per authentication method.

Mosquitto variants from the same configuration file, one after the other (see
``plantnotify.bench.stack``): ``plain`` (anonymous: what an idle connection costs Mosquitto
itself), ``plain_jwt`` (the same, but clients send our JWTs as passwords, which Mosquitto keeps
per connection), ``password_file`` (Mosquitto's own PBKDF2 password file) and ``plugin`` (ours:
JWT, per-user ACL, session tracking with a retained snapshot per user). The clients are spread over agent processes (each process
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
from plantnotify.bench.results import Report, ScenarioResult

NAME = "connections"
TITLE = "Idle authenticated connections: memory and connect+auth rate"
# (label, broker variant, credentials). ``plain_jwt`` is the plain broker given the same JWTs as
# passwords: Mosquitto keeps every client's password for the life of the connection, so this
# separates what the token itself costs from what the plugin's own bookkeeping costs.
VARIANTS = (
    ("plain", "plain", "password"),
    ("plain_jwt", "plain", "jwt"),
    ("password_file", "password_file", "password"),
    ("plugin", "plugin", "jwt"),
)
FULL_N = 19_900  # the broker's own 20,000-file cap minus its listeners, logs and database


def steps(quick: bool) -> int:
    return 1 + 2 * len(VARIANTS)


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    _, cap = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = ctx.pick(500, min(FULL_N, cap - 100))
    ctx.step(f"password file for {n} users")
    seed = secrets.token_hex(8)
    pwfile = ctx.scratch("connections") / "passwords"
    write_password_file(pwfile, {f"idle{i}": derived_password(seed, f"idle{i}") for i in range(n)})
    per_kind: dict[str, dict[str, Any]] = {}
    for label, kind, mode in VARIANTS:
        ctx.step(f"{label}: starting")
        broker = start_broker(ctx, kind, f"{label}-connections", password_file=pwfile)
        if mode == "jwt":
            creds: dict[str, Any] = {"mode": "jwt", "secret": ctx.secret, "audience": ctx.audience}
        else:
            creds = {"mode": "password", "seed": seed}
        ctx.step(f"{label}: {n} connections")
        try:
            per_kind[label] = hold_connections(
                ctx, broker, n=n, label=label, credentials=creds, user_prefix="idle"
            )
            per_kind[label]["open_files_cap"] = cap
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
    colours = {
        "plain": "#999999",
        "plain_jwt": "#bbbbbb",
        "password_file": "#dd8452",
        "plugin": "#4c72b0",
    }
    for ax, (title, key) in zip(axes, panels, strict=True):
        values = [result.series[k][key] or 0 for k in kinds]
        ax.bar(kinds, values, color=[colours.get(k, "#4c72b0") for k in kinds])
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
        for i, v in enumerate(values):
            ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)
    return [save(fig, out_dir / f"{NAME}.png")]


def explain_misses(report: Report) -> dict[str, str]:
    """Why a connection target was missed, from this run's own breakdown."""
    m = report.scenarios.get(NAME)
    if m is None or m.status != "ok":
        return {}
    x = m.metrics
    why: dict[str, str] = {}
    if (x.get("plugin_bytes_per_conn") or 0) > 1200 and x.get("jwt_password_bytes_per_conn"):
        why["memory-per-connection"] = (
            f"plain Mosquitto {x['plain_bytes_per_conn']:.0f} B + {x['jwt_password_bytes_per_conn']:.0f} B "
            "for the JWT Mosquitto keeps as the client's password + "
            f"{x['plugin_own_bytes_per_conn']:.0f} B of the plugin's own (per-connection record "
            "and the retained session snapshot of each user, ~550 B with one device per user)"
        )
    plugin, pwfile = x.get("plugin_connect_rate"), x.get("password_file_connect_rate")
    if plugin and pwfile and plugin < pwfile:
        why["connect-rate"] = (
            f"broker CPU per connect: plugin {x['plugin_broker_us_per_connect']} µs, "
            f"password file {x['password_file_broker_us_per_connect']} µs"
        )
    return why
