"""Mass disconnect: publish → subscribe latency while thousands of connections drop at once.

A load balancer restart drops every idle device at the same moment. With the plugin, each
user whose last connection went gets a session snapshot (offline, not retained); the plugin
paces them (``snapshots_per_second``) so the messages of the users
still connected keep their latency. Per broker (plain Mosquitto, anonymous; ours with the
plugin), in the same run: N idle connections (one per user), a publisher sending retained QoS-1
events at 500/s to 10 subscribed users, p99 over a quiet window, then p99 over a window in
which all N idle connections are closed at once. With the plugin, a service follows
``plantnotify/broker/session-changes`` (as the bridge does) and receives the offline snapshots
meanwhile; how many reached it, in how many messages, is reported.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.brokers import start_broker
from bench.context import BenchContext
from bench.plots import figure, save
from bench.pubsub import start_rig
from bench.results import ScenarioResult
from bench.running import RunningBroker
from bench.stats import ratio
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from plantnotify.contracts.events import SessionChanges
from plantnotify.contracts.topics import BROKER_SESSION_CHANGES_TOPIC
from plantnotify.mqtt import ConnectOptions, Credentials, Message, MqttClient

NAME = "mass_disconnect"
TITLE = "Publish → subscribe p99 while N connections disconnect at once"
RATE = 500
USERS = [f"md{i}" for i in range(10)]
PER_AGENT = 5000
BROKERS = ("plain", "plugin")


def steps(quick: bool) -> int:
    return 1 + 4 * len(BROKERS)


def _hold(ctx: BenchContext, broker: RunningBroker, n: int, creds: dict[str, Any]) -> list[Any]:
    agents = ctx.holders(max(1, -(-n // PER_AGENT)))
    share = [n // len(agents) + (1 if i < n % len(agents) else 0) for i in range(len(agents))]
    first = 0
    for agent, count in zip(agents, share, strict=True):
        agent.send(
            "open",
            port=broker.port,
            user_prefix="mdidle",
            first=first,
            count=count,
            concurrency=64,
            source_ip=ctx.source_ip(),
            **creds,
        )
        first += count
    opened = sum(a.recv(timeout=600)["opened"] for a in agents)
    if opened < n * 0.99:
        raise RuntimeError(f"only {opened} of {n} idle connections opened on {broker.name}")
    return agents


class PresenceWatcher:
    """A service connection following the session changes like the bridge, counting."""

    def __init__(self, broker: RunningBroker, token: str) -> None:
        self.snapshots = 0
        self.messages = 0
        self.client = MqttClient(
            ConnectOptions(
                host="127.0.0.1",
                port=broker.port,
                client_id="bench-md-presence",
                credentials=lambda: Credentials("bench-md-presence", token),
                subscriptions=[(BROKER_SESSION_CHANGES_TOPIC, 1)],
            ),
            on_message=self._count,
        ).start()
        self.client.wait_connected(timeout=10)

    def _count(self, msg: Message) -> None:
        # One paho thread: no lock needed for counters read afterwards.
        self.messages += 1
        self.snapshots += len(SessionChanges.model_validate_json(msg.payload).sessions)

    def stop(self) -> None:
        self.client.stop()


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    n = ctx.pick(500, 8000)
    seconds = ctx.pick(2.0, 6.0)
    signer = MqttSigner(key=ctx.secret, audience=ctx.audience)
    ctx.step("starting connection agents")
    ctx.holders(max(1, -(-n // PER_AGENT)))
    out: dict[str, Any] = {}
    for kind in BROKERS:
        ctx.step(f"{kind}: starting")
        broker = start_broker(ctx, kind, f"{kind}-mass-disconnect")
        if kind == "plugin":
            publisher = (
                "bench-md-pub",
                "bench-md-pub",
                mint_mqtt_token(signer, "bench-md-pub", 3600, service=True),
            )
            creds: dict[str, Any] = {"mode": "jwt", "secret": ctx.secret, "audience": ctx.audience}

            def device(user: str) -> tuple[str, str]:
                return user, mint_mqtt_token(signer, user, 3600)
        else:
            publisher = ("bench-md-pub", "bench", "unused")
            creds = {"mode": "password", "seed": "unused"}

            def device(user: str) -> tuple[str, str]:
                return user, "unused"

        rig = start_rig(
            ctx,
            broker,
            label=f"md-{kind}",
            users=USERS,
            publisher=publisher,
            device_credentials=device,
            transports=("tcp",),
        )
        watcher = (
            PresenceWatcher(
                broker, mint_mqtt_token(signer, "bench-md-presence", 3600, service=True)
            )
            if kind == "plugin"
            else None
        )
        ctx.step(f"{kind}: {n} idle connections")
        agents = _hold(ctx, broker, n, creds)
        rig.run(rate=200, seconds=1.0, key_prefix="warm")
        ctx.step(f"{kind}: {RATE} events/s, quiet")
        quiet = rig.run(rate=RATE, seconds=seconds, key_prefix="quiet")
        quiet.pop("_samples")
        ctx.step(f"{kind}: {RATE} events/s while {n} connections close")

        def drop_all(agents: list[Any] = agents) -> None:
            time.sleep(0.5)  # inside the measured window, not at its edge
            for agent in agents:
                agent.send("close")

        dropping = rig.run(rate=RATE, seconds=seconds, key_prefix="drop", during=drop_all)
        samples = dropping.pop("_samples")
        for agent in agents:
            agent.recv(timeout=120)
        if watcher is not None:
            time.sleep(n / 2000 + 1)  # snapshots_per_second (2,000): the last ones are out
            result.metrics["plugin_presence_snapshots_received"] = watcher.snapshots
            result.metrics["plugin_presence_messages_received"] = watcher.messages
            watcher.stop()
        result.series[f"{kind}_drop_samples"] = [round(x, 4) for x in samples["tcp"]]
        out[kind] = {"quiet": quiet, "dropping": dropping}
        for window, step in (("quiet", quiet), ("drop", dropping)):
            result.metrics[f"{kind}_p99_ms_{window}"] = step["tcp"].get("p99")
            result.metrics[f"{kind}_p50_ms_{window}"] = step["tcp"].get("p50")
            result.metrics[f"{kind}_missing_{window}"] = step["tcp"].get("missing")
        broker.stop()
    m = result.metrics
    m["p99_ratio_quiet"] = ratio(m.get("plugin_p99_ms_quiet"), m.get("plain_p99_ms_quiet"))
    m["p99_ratio_drop"] = ratio(m.get("plugin_p99_ms_drop"), m.get("plain_p99_ms_drop"))
    m["connections_dropped"] = n
    result.series["steps"] = out
    result.notes.append(
        f"{n} idle connections (one user each, MQTT 3.1.1) closed at once 0.5 s into a "
        f"{seconds:.0f} s window of {RATE} retained QoS-1 events/s to {len(USERS)} other users "
        "(MQTT 5, TCP); p99 of publish → device over the window, against the same window with "
        "nothing dropping; plain Mosquitto (anonymous) and ours (plugin) in the same run."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    fig, ax = figure("p99 publish → subscribe (ms): quiet vs mass disconnect")
    labels, values = [], []
    for kind in BROKERS:
        for window in ("quiet", "drop"):
            labels.append(f"{kind} {window}")
            values.append(result.metrics.get(f"{kind}_p99_ms_{window}") or 0)
    ax.bar(labels, values, color=["#999999", "#999999", "#4c72b0", "#4c72b0"])
    ax.set_ylabel("ms")
    return [save(fig, out_dir / f"{NAME}.png")]
