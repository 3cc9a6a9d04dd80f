"""The clustered engine beside the default one: a 3-node NATS cluster (JetStream, MQTT, an auth
callout beside each node) and our Mosquitto + plugin, the same clients and traffic, one after
the other in the same run.

Per engine: memory per idle authenticated connection and per QoS-1 subscriber (RSS growth of
the node they connect to), the connect + authenticate rate (connect, CONNACK, disconnect: on
NATS every one goes through the auth callout), and publish → device latency of retained QoS-1
events at 500/s (on NATS published on node 1, received on node 3) with the broker CPU it costs
(all nodes and callouts) per 1,000 events. MQTT 3.1.1 for both (NATS speaks nothing newer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.connections import hold_connections
from bench.context import BenchContext
from bench.plots import figure, save
from bench.procs import cpu_seconds
from bench.pubsub import start_rig
from bench.results import ScenarioResult
from bench.running import RunningBroker
from bench.stack import start_mosquitto_variant
from bench.stats import ratio
from plantnotify.broker.engines.nats.cluster import NatsCluster, local_layout
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from plantnotify.settings import load_settings

NAME = "engines"
TITLE = "NATS cluster (3 nodes + auth callouts) beside Mosquitto + plugin, same traffic"
RATE = 500
LOW_RATE = 200  # what a small cluster on this box sustains, for the capacity estimate
USERS = [f"eng{i}" for i in range(10)]


def steps(quick: bool) -> int:
    return 2 * 5


class _Nats:
    """The cluster as the bench sees it: one RunningBroker per node, plus the callouts."""

    def __init__(self, ctx: BenchContext) -> None:
        data = ctx.scratch("nats")
        settings = load_settings(
            environment="test",
            jwt_secret=ctx.secret,
            mqtt_audience=ctx.audience,
            broker_engine="nats",
            log_level="WARNING",
        )
        self.cluster = NatsCluster(settings, local_layout(data))
        self.cluster.start()
        self.nodes = [
            _running(f"nats-{node.name}", node.mqtt_port, node.ws_port, child, data)
            for node, child in zip(self.cluster.layout.nodes, self.cluster.nodes, strict=True)
        ]

    def cpu(self) -> float:
        pids = [c.proc.pid for c in [*self.cluster.nodes, *self.cluster.callouts] if c.proc]
        return sum(cpu_seconds(pid) for pid in pids)

    def callout_cpu(self) -> float:
        return sum(cpu_seconds(c.proc.pid) for c in self.cluster.callouts if c.proc)

    def stop(self) -> None:
        self.cluster.stop()


def _running(name: str, port: int, ws_port: int, child: Any, data: Path) -> RunningBroker:
    return RunningBroker(
        name,
        "nats",
        port,
        ws_port,
        child.proc.pid,
        child.log_path,
        _stop=lambda: None,
        _alive=child.running,
    )


def _measure(
    ctx: BenchContext,
    label: str,
    entry: RunningBroker,
    far: RunningBroker,
    cpu: Any,
    callout_cpu: Any,
) -> dict[str, Any]:
    signer = MqttSigner(key=ctx.secret, audience=ctx.audience)
    creds = {"mode": "jwt", "secret": ctx.secret, "audience": ctx.audience}
    out: dict[str, Any] = {}
    # Latency first: closing QoS-1 subscribers makes NATS delete their JetStream consumers,
    # seconds of CPU on every node that would land in a later measurement.
    ctx.step(f"{label}: events/s publish -> device")
    rig = start_rig(
        ctx,
        far,
        label=label,
        users=USERS,
        publisher=(
            "svc-bench-pub",
            "svc-bench-pub",
            mint_mqtt_token(signer, "svc-bench-pub", 3600, service=True),
        ),
        device_credentials=lambda u: (u, mint_mqtt_token(signer, u, 3600)),
        transports=("tcp",),
        protocol=4,
        publisher_port=entry.port,
    )
    rig.run(rate=100, seconds=ctx.pick(0.5, 1.0), key_prefix="warm")
    seconds = ctx.pick(1.0, 10.0)
    for rate in ctx.pick((RATE,), (LOW_RATE, RATE)):
        cpu0 = cpu()
        step = rig.run(rate=rate, seconds=seconds, key_prefix=f"r{rate}-")
        step.pop("_samples")
        step["broker_cpu_ms_per_1000"] = round((cpu() - cpu0) / step["sent"] * 1e6, 1)
        out["latency" if rate == RATE else f"latency_{rate}"] = step
    ctx.step(f"{label}: idle connections")
    out["idle"] = hold_connections(
        ctx,
        entry,
        n=ctx.pick(50, 1000),
        label=f"{label}-idle",
        credentials=creds,
        user_prefix=f"{label}idle",
    )
    ctx.step(f"{label}: connect + authenticate rate")
    c0 = callout_cpu()
    churn = hold_connections(
        ctx,
        entry,
        n=ctx.pick(50, 1000),
        label=f"{label}-churn",
        credentials=creds,
        user_prefix=f"{label}churn",
        churn=True,
    )
    churn["callout_cpu_us_per_connect"] = (
        round((callout_cpu() - c0) / churn["opened"] * 1e6, 1) if churn["opened"] else None
    )
    out["churn"] = churn
    ctx.step(f"{label}: QoS-1 subscribers")
    out["subscribers"] = hold_connections(
        ctx,
        entry,
        n=ctx.pick(20, 300),
        label=f"{label}-subs",
        credentials=creds,
        user_prefix=f"{label}sub",
        subscribe=True,
    )
    return out


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    measured: dict[str, dict[str, Any]] = {}
    ctx.step("starting mosquitto + plugin")
    mosq = start_mosquitto_variant(ctx, "plugin", "plugin-vs-nats")
    try:
        measured["mosquitto"] = _measure(
            ctx, "mosquitto", mosq, mosq, mosq.cpu_seconds, lambda: 0.0
        )
    finally:
        mosq.stop()
    ctx.step("starting the NATS cluster")
    nats = _Nats(ctx)
    try:
        measured["nats"] = _measure(
            ctx, "nats", nats.nodes[0], nats.nodes[-1], nats.cpu, nats.callout_cpu
        )
    finally:
        nats.stop()
    result.series = measured
    m = result.metrics
    for name, x in measured.items():
        lat = x["latency"]["tcp"]
        m[f"{name}_p50_ms_at_{RATE}"] = lat.get("p50")
        m[f"{name}_p99_ms_at_{RATE}"] = lat.get("p99")
        m[f"{name}_missing_at_{RATE}"] = lat.get("missing")
        m[f"{name}_cpu_ms_per_1000_events"] = x["latency"]["broker_cpu_ms_per_1000"]
        m[f"{name}_bytes_per_idle_conn"] = x["idle"]["bytes_per_conn"]
        m[f"{name}_bytes_per_qos1_subscriber"] = x["subscribers"]["bytes_per_conn"]
        m[f"{name}_connect_auth_rate"] = x["churn"]["connect_rate"]
        m[f"{name}_connect_refused"] = x["churn"]["failed"]
    for name, x in measured.items():
        low = x.get(f"latency_{LOW_RATE}")
        if low:
            m[f"{name}_p50_ms_at_{LOW_RATE}"] = low["tcp"].get("p50")
            m[f"{name}_p99_ms_at_{LOW_RATE}"] = low["tcp"].get("p99")
            m[f"{name}_cpu_ms_per_1000_events_at_{LOW_RATE}"] = low["broker_cpu_ms_per_1000"]
    m["nats_callout_cpu_us_per_connect"] = measured["nats"]["churn"]["callout_cpu_us_per_connect"]
    m["p99_ratio_nats_over_mosquitto"] = ratio(
        m[f"nats_p99_ms_at_{RATE}"], m[f"mosquitto_p99_ms_at_{RATE}"]
    )
    result.notes.append(
        "NATS: 3 nodes and 3 auth callouts on this one machine; latency is publish on node 1 -> "
        "device on node 3; memory is the RSS growth of the node the clients connect to (the "
        "replicated JetStream consumer of each QoS-1 subscriber on the other nodes is not in "
        "it); CPU per 1,000 events sums every node and callout."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    m = result.metrics
    fig, axes = figure("NATS cluster vs Mosquitto + plugin (same run)", ncols=4, width=3.3)
    panels = [
        (f"p99 at {RATE}/s (ms)", "p99_ms_at_500"),
        ("CPU ms per 1,000 events", "cpu_ms_per_1000_events"),
        ("bytes per QoS-1 subscriber", "bytes_per_qos1_subscriber"),
        ("connect + auth per s", "connect_auth_rate"),
    ]
    for ax, (title, key) in zip(axes, panels, strict=True):
        values = [m.get(f"mosquitto_{key}") or 0, m.get(f"nats_{key}") or 0]
        ax.bar(["mosquitto", "nats"], values, color=["#4c72b0", "#55a868"])
        ax.set_title(title, fontsize=9)
    return [save(fig, out_dir / f"{NAME}.png")]
