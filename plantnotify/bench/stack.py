"""Our own parts, started for the bench: the broker variants (and later worker, bridge, API)."""

from __future__ import annotations

from plantnotify.bench.brokers import RunningBroker, start_mosquitto
from plantnotify.bench.context import BenchContext


def start_mosquitto_variant(ctx: BenchContext, kind: str, name: str) -> RunningBroker:
    if kind == "plain":
        broker = start_mosquitto(name, ctx.scratch(name), auth="anonymous")
    else:
        raise NotImplementedError(f"broker kind {kind!r} needs plantnotify.broker (plugin)")
    ctx.on_close(broker.stop)
    return broker
