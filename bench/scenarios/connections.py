"""Connections: idle authenticated connections on one broker, and the connect+auth rate.

Mosquitto variants from the same configuration file, one after the other (see
``bench.stack``): ``plain`` (anonymous: what an idle connection costs Mosquitto
itself), ``plain_jwt`` (the same, but clients send our JWTs as passwords, which Mosquitto keeps
per connection), ``password_file`` (Mosquitto's own PBKDF2 password file) and ``plugin`` (ours:
JWT, per-user ACL, session tracking: per-user records, snapshots published but not retained), with
one connection per user (the worst case for the per-user records) and with five per user (the
most the plugin allows; the user's record is shared).

1. Idle: N connections spread over agent processes (each process may hold at most 20,000
   open files here, the broker included, which caps one broker just below 20,000
   connections). Broker RSS per connection over the connections still answering a PINGREQ
   afterwards; broker CPU per connect; the clients' connect rate while the broker grows.
2. Connect+auth rate at a steady broker size (absorbed from the plugin's bench/broker_auth.py):
   clients connect, wait for CONNACK and disconnect, over and over, against the password file,
   the plugin with HS256 and the plugin with RS256.
"""

from __future__ import annotations

import resource
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.agents.holder import derived_password
from bench.brokers import start_broker, write_password_file
from bench.connections import hold_connections
from bench.context import BenchContext
from bench.plots import figure, save
from bench.results import Report, ScenarioResult

NAME = "connections"
TITLE = "Idle authenticated connections: memory and connect+auth rate"
FULL_N = 19_900  # the broker's own 20,000-file cap minus its listeners, logs and database
AT_8K = 8_000  # the other size for the memory target
# label: (broker variant, credentials, connections per user, connections or None for N)
IDLE: dict[str, tuple[str, str, int, int | None]] = {
    "plain": ("plain", "password", 1, None),
    "plain_jwt": ("plain", "jwt", 1, None),
    "password_file": ("password_file", "password", 1, None),
    "plugin": ("plugin", "jwt", 1, None),
    "plugin_5_per_user": ("plugin", "jwt", 5, None),
    # MQTT 5 clients sending the token as authentication data: Mosquitto does not keep it.
    "plugin_v5_auth": ("plugin", "jwt_auth", 1, None),
    "plain_8k": ("plain", "password", 1, AT_8K),
    "plugin_8k": ("plugin", "jwt", 1, AT_8K),
}
CHURN = ("password_file", "plugin", "plugin_rs256")
QUICK_IDLE = ("plain", "plugin")
QUICK_CHURN = ("password_file", "plugin")


def steps(quick: bool) -> int:
    if quick:
        return 1 + 2 * len(QUICK_IDLE) + len(QUICK_CHURN)
    return 1 + 2 * len(IDLE) + 3 * len(CHURN)


def _rsa_keys(ctx: BenchContext) -> tuple[Path, Path, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    d = ctx.scratch("connections")
    (d / "rs.key").write_bytes(private)
    (d / "rs.key").chmod(0o600)
    (d / "rs.pub").write_bytes(public)
    return d / "rs.key", d / "rs.pub", private.decode()


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    _, cap = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = ctx.pick(500, min(FULL_N, cap - 100))
    churn_n = ctx.pick(400, 2000)
    rounds_n = ctx.pick(1, 3)
    ctx.holders(1 if ctx.quick else 4)  # agents start importing while the file is written
    ctx.step(f"password file for {n} users")
    seed = secrets.token_hex(8)
    pwfile = ctx.scratch("connections") / "passwords"
    users = [f"idle{i}" for i in range(n)] + [f"churn{i}" for i in range(churn_n)]
    write_password_file(pwfile, {u: derived_password(seed, u) for u in users})
    jwt = {"mode": "jwt", "secret": ctx.secret, "audience": ctx.audience}
    password = {"mode": "password", "seed": seed}

    idle: dict[str, dict[str, Any]] = {}
    for label, (kind, mode, per_user, size) in IDLE.items():
        if ctx.quick and label not in QUICK_IDLE:
            continue
        if size is not None and size >= n:
            continue  # the main size already covers it
        ctx.step(f"{label}: starting")
        broker = start_broker(ctx, kind, f"{label}-idle", password_file=pwfile)
        ctx.step(f"{label}: {n} idle connections")
        try:
            idle[label] = hold_connections(
                ctx,
                broker,
                n=size or n,
                label=label,
                credentials={"jwt": jwt, "jwt_auth": {**jwt, "auth_method": "jwt"}}.get(
                    mode, password
                ),
                user_prefix="idle",
                per_user=per_user,
            )
            idle[label]["open_files_cap"] = cap
        finally:
            broker.stop()

    private_path, public_path, private_pem = _rsa_keys(ctx)
    brokers: dict[str, tuple[Any, dict[str, Any]]] = {}
    for label in QUICK_CHURN if ctx.quick else CHURN:
        if label == "plugin_rs256":
            broker = start_broker(
                ctx,
                "plugin",
                "rs256-churn",
                mqtt_jwt_algorithm="RS256",
                mqtt_jwt_private_key_file=private_path,
                mqtt_jwt_public_key_file=public_path,
            )
            creds: dict[str, Any] = {
                "mode": "jwt",
                "secret": private_pem,
                "algorithm": "RS256",
                "audience": ctx.audience,
            }
        else:
            broker = start_broker(ctx, label, f"{label}-churn", password_file=pwfile)
            creds = jwt if label == "plugin" else password
        brokers[label] = (broker, creds)
    # Rounds alternate between the brokers, so a burst of load from elsewhere on the machine
    # hits all of them alike; each variant's rate is the median of its rounds.
    rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in brokers}
    for round_ in range(rounds_n):
        for label, (broker, creds) in brokers.items():
            ctx.step(f"{label}: {churn_n} connect+auth+disconnect (round {round_ + 1})")
            rounds[label].append(
                hold_connections(
                    ctx,
                    broker,
                    n=churn_n,
                    label=f"{label}-churn",
                    credentials=creds,
                    user_prefix="churn",
                    churn=True,
                    per_agent=max(1, churn_n // 4),
                    concurrency=16,
                )
            )
    for broker, _ in brokers.values():
        broker.stop()
    churn: dict[str, dict[str, Any]] = {}
    for label, results in rounds.items():
        by_rate = sorted(results, key=lambda r: r["connect_rate"] or 0)
        churn[label] = {
            **by_rate[len(by_rate) // 2],
            "rounds_connect_rate": [r["connect_rate"] for r in results],
            "rounds_broker_cpu_us_per_connect": [r["broker_cpu_us_per_connect"] for r in results],
        }

    result.series = {"idle": idle, "churn": churn}
    m = result.metrics
    for label, r in idle.items():
        m[f"{label}_bytes_per_conn"] = r["bytes_per_conn"]
    for label, r in churn.items():
        m[f"{label}_connect_rate"] = r["connect_rate"]
        m[f"{label}_broker_us_per_connect"] = r["broker_cpu_us_per_connect"]
    plugin, plain = idle["plugin"], idle["plain"]
    plain_jwt = idle.get("plain_jwt", {"bytes_per_conn": None})
    if None not in (plugin["bytes_per_conn"], plain["bytes_per_conn"], plain_jwt["bytes_per_conn"]):
        m["plugin_adds_bytes_per_conn"] = round(
            plugin["bytes_per_conn"] - plain["bytes_per_conn"], 1
        )
        m["jwt_password_bytes_per_conn"] = round(
            plain_jwt["bytes_per_conn"] - plain["bytes_per_conn"], 1
        )
        m["plugin_own_bytes_per_conn"] = round(
            plugin["bytes_per_conn"] - plain_jwt["bytes_per_conn"], 1
        )
    m["plugin_open_rate"] = plugin["connect_rate"]
    m["plugin_open_broker_us_per_connect"] = plugin["broker_cpu_us_per_connect"]
    m["connections_one_broker"] = plugin["alive_after"]
    m["fraction_of_open_files_cap"] = round(plugin["alive_after"] / cap, 3)
    result.notes.append(
        f"Idle: N = {n} per variant (the full run opens {FULL_N}, just under the {cap:,} open "
        "files one process may have here), no subscriptions; memory = broker RSS after - before "
        "over connections alive afterwards. Connect rate: "
        f"{churn_n} connect+CONNACK+DISCONNECT per variant and round from 4 agent processes "
        f"(16 in flight each), {rounds_n} alternating round(s), median round reported; clients "
        "and broker share the two cores; broker CPU per connect is the broker-bound cost "
        "independent of the clients."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    fig, axes = figure(
        "Connections on one Mosquitto (same config, auth differs)", ncols=3, width=3.8
    )
    idle, churn = result.series["idle"], result.series["churn"]
    panels = [
        ("idle: memory per connection (bytes)", idle, "bytes_per_conn"),
        ("connect+auth rate (/s)", churn, "connect_rate"),
        ("broker CPU per connect+auth (µs)", churn, "broker_cpu_us_per_connect"),
    ]
    for ax, (title, data, key) in zip(axes, panels, strict=True):
        labels = list(data)
        values = [data[k][key] or 0 for k in labels]
        colours = ["#4c72b0" if k.startswith("plugin") else "#999999" for k in labels]
        ax.bar(labels, values, color=colours)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=25)
        for i, v in enumerate(values):
            ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=7)
    return [save(fig, out_dir / f"{NAME}.png")]


def explain_misses(report: Report) -> dict[str, str]:
    """Why a connection target was missed, from this run's own breakdown."""
    r = report.scenarios.get(NAME)
    if r is None or r.status != "ok":
        return {}
    x = r.metrics
    why: dict[str, str] = {}
    if (x.get("plugin_bytes_per_conn") or 0) > 1200 and x.get("jwt_password_bytes_per_conn"):
        why["memory-per-connection"] = (
            f"plain Mosquitto {x['plain_bytes_per_conn']:.0f} B + "
            f"{x['jwt_password_bytes_per_conn']:.0f} B for the JWT Mosquitto keeps as the "
            f"client's password + {x['plugin_own_bytes_per_conn']:.0f} B of the plugin's own "
            "(per-connection record and each user's retained session snapshot, ~550 B); with 5 "
            f"devices per user {x.get('plugin_5_per_user_bytes_per_conn') or 0:.0f} B"
        )
    plugin, pwfile = x.get("plugin_connect_rate"), x.get("password_file_connect_rate")
    if plugin and pwfile and plugin < pwfile:
        why["connect-rate"] = (
            f"broker CPU per connect: plugin {x['plugin_broker_us_per_connect']} µs, "
            f"password file {x['password_file_broker_us_per_connect']} µs"
        )
    return why
