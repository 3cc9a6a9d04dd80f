"""Open N idle authenticated connections to one broker, spread over agent processes.

Measures, on the broker process: resident memory per connection (RSS after - RSS before, over
the connections still alive), CPU time per connect+auth, and the connect rate seen by the
clients (connections / wall time from the first attempt to the last CONNACK).
"""

from __future__ import annotations

import math
from typing import Any

from bench.context import BenchContext
from bench.procs import settle_rss
from bench.running import RunningBroker
from bench.stats import percentile

PER_AGENT = 5000  # far below the 20,000 open files each process may have


def hold_connections(
    ctx: BenchContext,
    broker: RunningBroker,
    *,
    n: int,
    label: str,
    credentials: dict[str, Any],
    user_prefix: str,
    concurrency: int = 64,
    churn: bool = False,
    per_agent: int = PER_AGENT,
    **options: Any,
) -> dict[str, Any]:
    """Open ``n`` connections (credentials: ``mode`` jwt/password plus its fields), measure,
    check they are alive, close them. With ``churn`` each connection disconnects right after
    its CONNACK (a connect+auth rate at a steady broker size); ``options`` go to the agents
    (``per_user``, ``subscribe``)."""
    agents_n = max(1, math.ceil(n / per_agent))
    agents = ctx.holders(agents_n)
    # A no-op round trip: every agent has finished starting before anything is timed.
    for agent in agents:
        agent.send("close")
    for agent in agents:
        agent.recv(timeout=120)
    share = [n // agents_n + (1 if i < n % agents_n else 0) for i in range(agents_n)]
    rss0 = broker.rss_kib() if churn else settle_rss(broker.pid, 0.5)
    cpu0 = broker.cpu_seconds()
    first = 0
    for agent, count in zip(agents, share, strict=True):
        agent.send(
            "open",
            port=broker.port,
            user_prefix=user_prefix,
            first=first,
            count=count,
            concurrency=concurrency,
            source_ip=ctx.source_ip(),
            churn=churn,
            **credentials,
            **options,
        )
        first += count
    answers = [a.recv(timeout=600) for a in agents]
    cpu1 = broker.cpu_seconds()
    rss1 = broker.rss_kib() if churn else settle_rss(broker.pid, 1.0)
    alive = 0 if churn else sum(a.call("ping", timeout=120)["alive"] for a in agents)
    opened = sum(x["opened"] for x in answers)
    failed = sum(x["failed"] for x in answers)
    errors: dict[str, int] = {}
    for x in answers:
        for k, v in x["errors"].items():
            errors[k] = errors.get(k, 0) + v
    span = (max(x["end_ns"] for x in answers) - min(x["start_ns"] for x in answers)) / 1e9
    connect_ms = sorted(t for x in answers for t in x["connect_ms"])
    agent_cpu = sum(x["agent_cpu_seconds"] for x in answers)
    for agent in agents:
        agent.call("close", timeout=120)
    return {
        "requested": n,
        "opened": opened,
        "failed": failed,
        "errors": errors,
        "alive_after": alive,
        "agents": agents_n,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "bytes_per_conn": round((rss1 - rss0) * 1024 / alive, 1) if alive else None,
        "connect_rate": round(opened / span, 1) if span > 0 else None,
        "broker_cpu_us_per_connect": round((cpu1 - cpu0) / opened * 1e6, 1) if opened else None,
        "agent_cpu_us_per_connect": round(agent_cpu / opened * 1e6, 1) if opened else None,
        "connect_latency_ms": {
            "p50": round(percentile(connect_ms, 50), 3),
            "p99": round(percentile(connect_ms, 99), 3),
        },
        "seconds": round(span, 2),
    }
