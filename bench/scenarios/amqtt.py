"""Baseline (b): amqtt, the pure-Python broker a Python team might pick, on the same traffic.

amqtt gets the same work per connection and per message as our plugin (HS256 JWT with aud/exp/
sub checks, per-user topic rules: bench.amqtt_auth). Both brokers, one after the
other in the same run: N idle authenticated connections (connect rate, memory per connection),
then publish → subscribe latency at 500 and 2,000 events/s and a flat-out throughput burst.
MQTT 3.1.1 for both, as amqtt speaks nothing newer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.brokers import start_amqtt, start_broker
from bench.connections import hold_connections
from bench.context import BenchContext
from bench.plots import figure, save
from bench.pubsub import start_rig
from bench.results import Report, ScenarioResult
from bench.running import RunningBroker
from bench.stats import ratio
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token

NAME = "amqtt"
TITLE = "amqtt (pure Python) vs our Mosquitto + plugin, same traffic"
RATES = (500, 2000)
QUICK_RATES = (500,)
USERS = [f"cmp{i}" for i in range(10)]
OURS = "plugin"


def steps(quick: bool) -> int:
    return 2 * (3 + len(QUICK_RATES if quick else RATES) + 1)


def _measure(ctx: BenchContext, broker: RunningBroker, label: str) -> dict[str, Any]:
    n = ctx.pick(100, 2000)
    seconds = ctx.pick(1.0, 5.0)
    burst = ctx.pick(300, 5000)
    signer = MqttSigner(key=ctx.secret, audience=ctx.audience)
    out: dict[str, Any] = {}
    ctx.step(f"{label}: {n} idle connections")
    out["connections"] = hold_connections(
        ctx,
        broker,
        n=n,
        label=f"{label}-idle",
        credentials={"mode": "jwt", "secret": ctx.secret, "audience": ctx.audience},
        user_prefix="idle",
    )
    ctx.step(f"{label}: connecting clients")
    rig = start_rig(
        ctx,
        broker,
        label=label,
        users=USERS,
        publisher=(
            "bench-publisher",
            "bench-publisher",
            mint_mqtt_token(signer, "bench-publisher", 3600, service=True),
        ),
        device_credentials=lambda u: (u, mint_mqtt_token(signer, u, 3600)),
        transports=("tcp",),
        protocol=4,
    )
    rig.run(rate=100, seconds=ctx.pick(0.5, 1.0), key_prefix="warm")
    for rate in QUICK_RATES if ctx.quick else RATES:
        ctx.step(f"{label}: {rate} events/s")
        step = rig.run(rate=rate, seconds=seconds, key_prefix=f"r{rate}-")
        step.pop("_samples")
        out[f"rate_{rate}"] = step
    ctx.step(f"{label}: throughput burst of {burst}")
    step = rig.run(rate=50_000, seconds=burst / 50_000, key_prefix="burst-")
    step.pop("_samples")
    out["burst"] = step
    return out


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    measured: dict[str, dict[str, Any]] = {}
    for kind in ("amqtt", OURS):
        ctx.step(f"starting {kind}")
        if kind == "amqtt":
            broker = start_amqtt(
                "amqtt", ctx.scratch("amqtt"), secret=ctx.secret, audience=ctx.audience
            )
        else:
            broker = start_broker(ctx, kind, f"{kind}-vs-amqtt")
        try:
            measured[kind] = _measure(ctx, broker, kind)
        finally:
            broker.stop()
    result.series = measured
    a, o = measured["amqtt"], measured[OURS]
    m = result.metrics
    m["amqtt_connect_rate"] = a["connections"]["connect_rate"]
    m["ours_connect_rate"] = o["connections"]["connect_rate"]
    m["connect_rate_ratio"] = ratio(m["ours_connect_rate"], m["amqtt_connect_rate"])
    m["amqtt_bytes_per_conn"] = a["connections"]["bytes_per_conn"]
    m["ours_bytes_per_conn"] = o["connections"]["bytes_per_conn"]
    m["memory_ratio"] = ratio(m["amqtt_bytes_per_conn"], m["ours_bytes_per_conn"])
    for rate in QUICK_RATES if ctx.quick else RATES:
        m[f"amqtt_p99_ms_at_{rate}"] = a[f"rate_{rate}"]["tcp"].get("p99")
        m[f"ours_p99_ms_at_{rate}"] = o[f"rate_{rate}"]["tcp"].get("p99")
        m[f"p99_ratio_at_{rate}"] = ratio(m[f"amqtt_p99_ms_at_{rate}"], m[f"ours_p99_ms_at_{rate}"])
    m["amqtt_throughput"] = a["burst"]["tcp"].get("delivered_rate")
    m["ours_throughput"] = o["burst"]["tcp"].get("delivered_rate")
    m["throughput_ratio"] = ratio(m["ours_throughput"], m["amqtt_throughput"])
    result.notes.append(
        f"{a['connections']['requested']} idle connections per broker (memory and connect rate "
        f"at the same N for both); {len(USERS)} device clients; MQTT 3.1.1, retained QoS 1, "
        "~400-byte events; throughput = events delivered per second during a flat-out burst."
    )
    result.notes.append(
        "Ratios are ours over amqtt for rates and amqtt over ours for memory and latency, so "
        "bigger is better for us in every row."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    m = result.metrics
    fig, axes = figure(
        "amqtt vs our Mosquitto + plugin (same traffic, same run)", ncols=4, width=3.3
    )
    panels = [
        ("connect rate (/s)", "amqtt_connect_rate", "ours_connect_rate"),
        ("memory per idle conn (bytes)", "amqtt_bytes_per_conn", "ours_bytes_per_conn"),
        ("p99 at 500 events/s (ms)", "amqtt_p99_ms_at_500", "ours_p99_ms_at_500"),
        ("throughput (events/s)", "amqtt_throughput", "ours_throughput"),
    ]
    for ax, (title, ka, ko) in zip(axes, panels, strict=True):
        values = [m.get(ka) or 0, m.get(ko) or 0]
        ax.bar(["amqtt", "ours"], values, color=["#c44e52", "#4c72b0"])
        ax.set_title(title, fontsize=9)
        ax.set_yscale("log")
    return [save(fig, out_dir / f"{NAME}.png")]


def explain_misses(report: Report) -> dict[str, str]:
    """The raw numbers behind each amqtt ratio that missed its target."""
    r = report.scenarios.get(NAME)
    if r is None or r.status != "ok":
        return {}
    m, s = r.metrics, r.series
    why: dict[str, str] = {}
    if (m.get("connect_rate_ratio") or 0) < 10:
        why["amqtt-connect"] = (
            f"ours {m['ours_connect_rate']:,.0f}/s vs amqtt {m['amqtt_connect_rate']:,.0f}/s; "
            "broker CPU per connect: ours "
            f"{s[OURS]['connections']['broker_cpu_us_per_connect']} µs, amqtt "
            f"{s['amqtt']['connections']['broker_cpu_us_per_connect']} µs (ours is bounded by "
            "the clients sharing the two cores)"
        )
    if (m.get("memory_ratio") or 0) < 40:
        why["amqtt-memory"] = (
            f"ours {m['ours_bytes_per_conn']:,.0f} B vs amqtt {m['amqtt_bytes_per_conn']:,.0f} B "
            "per connection"
        )
    for rate, key in ((500, "amqtt-p99"), (2000, "amqtt-p99-2000")):
        ratio_ = m.get(f"p99_ratio_at_{rate}")
        if ratio_ is not None and ratio_ < 50:
            a, o = s["amqtt"][f"rate_{rate}"]["tcp"], s[OURS][f"rate_{rate}"]["tcp"]
            why[key] = (
                f"p50/p99 ours {o.get('p50')}/{o.get('p99')} ms, amqtt {a.get('p50')}/"
                f"{a.get('p99')} ms"
            )
    return why
