"""Broker-level publish → subscribe latency: one publisher agent, device agents per transport.

The same clients, payloads and pacing for every broker, so only the broker differs. Latency of
a message = arrival at the device - the moment the publisher handed it to its client library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.agent import Agent
from bench.context import BenchContext
from bench.procs import cpu_seconds
from bench.running import RunningBroker
from bench.stats import latencies_ms, summarize
from plantnotify.contracts.topics import analyses_filter

# (username, password) for a user id; None = anonymous broker (credentials sent but ignored).
CredentialsFor = Callable[[str], tuple[str, str]]


@dataclass
class PubSubRig:
    publisher: Agent
    devices: dict[str, Agent]  # transport -> agent
    users: list[str]

    def run(
        self,
        rate: float,
        seconds: float,
        key_prefix: str,
        during: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Publish at ``rate`` for ``seconds``; per transport: latency summary and losses.
        ``during`` runs once the publisher has started (something to measure latency under)."""
        count = max(1, int(rate * seconds))
        agents = {
            "publisher": self.publisher,
            **{f"devices_{t}": a for t, a in self.devices.items()},
        }
        cpu0 = {k: cpu_seconds(a.pid) for k, a in agents.items()}
        self.publisher.send("run", users=self.users, rate=rate, count=count, key_prefix=key_prefix)
        if during is not None:
            during()
        answer = self.publisher.recv(timeout=seconds * 4 + 60)
        sent: dict[str, int] = answer["sent"]
        out: dict[str, Any] = {
            "offered_rate": rate,
            "achieved_publish_rate": answer["achieved_rate"],
            "sent": count,
            "unacked": answer["unacked"],
            "publisher_schedule_lag_p99_ms": answer["schedule_lag_p99_ms"],
        }
        for transport, agent in self.devices.items():
            got = agent.call("collect", timeout=90, expect=count, wait=30)["received"]
            samples, missing = latencies_ms(sent, got)
            span_ns = max(got.values()) - min(sent.values()) if got else 0
            out[transport] = {
                **summarize(samples),
                "missing": missing,
                "delivered_rate": round(len(got) / (span_ns / 1e9), 1) if span_ns > 0 else None,
            }
            out.setdefault("_samples", {})[transport] = samples
        # What the measuring clients themselves cost: they share the machine with the broker.
        out["client_cpu_us_per_event"] = {
            k: round((cpu_seconds(a.pid) - cpu0[k]) / count * 1e6, 1) for k, a in agents.items()
        }
        return out


def start_rig(
    ctx: BenchContext,
    broker: RunningBroker,
    *,
    label: str,
    users: list[str],
    publisher: tuple[str, str, str],
    device_credentials: CredentialsFor,
    transports: tuple[str, ...] = ("tcp", "ws"),
    protocol: int = 5,
    publisher_port: int | None = None,
) -> PubSubRig:
    """Connect the publisher (client id, username, password) and one device per user per
    transport; the devices subscribe to their user's analyses. ``publisher_port``: publish on
    another node of a cluster than the devices' (default: the same broker)."""
    # Start every agent process first (their imports take a while), then connect them all.
    pub = ctx.agent("publisher", f"{label}-publisher")
    devices = {t: ctx.agent("subscriber", f"{label}-devices-{t}") for t in transports}
    client_id, username, password = publisher
    pub.send(
        "connect",
        port=publisher_port or broker.port,
        client_id=client_id,
        username=username,
        password=password,
        protocol=protocol,
    )
    for transport, agent in devices.items():
        port = broker.port if transport == "tcp" else broker.ws_port
        if port is None:
            raise ValueError(f"broker {broker.name} has no {transport} listener")
        clients = []
        for user in users:
            name, pw = device_credentials(user)
            clients.append(
                {
                    "client_id": f"{user}-bench-{transport}",
                    "username": name,
                    "password": pw,
                    "filter": analyses_filter(user),
                }
            )
        agent.send(
            "connect",
            port=port,
            transport="websockets" if transport == "ws" else "tcp",
            protocol=protocol,
            clients=clients,
        )
    pub.recv(timeout=60)
    for agent in devices.values():
        agent.recv(timeout=90)
    return PubSubRig(pub, devices, users)
