"""Connect + auth rate through the NATS engine's auth callouts (prints JSON; not in the suite).

    .venv/bin/python -m bench.scripts.natsconnect [--seconds 20] [--concurrency 48]
                                                  [--users 0] [--label after]

Starts a local 3-node cluster with an auth callout beside each node (the production code),
then ``--concurrency`` clients connect, wait for the CONNACK and disconnect, over and over,
spread round-robin over the three nodes (MQTT 3.1.1 over TCP, HS256 tokens minted beforehand).
``--users 0``: every connection its own user (no two CONNECTs of one user meet: the
per-user cap costs its bookkeeping only); ``--users N``: N users shared by all clients, so
CONNECTs of one user race through different callouts (the per-user cap refuses some: counted
apart). Reported: accepted CONNECTs per second, refused, CONNECT → CONNACK p50/p99, and CPU per
accepted CONNECT of the callouts and of the nodes (``/proc``), with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from bench.mqttwire import PacketReader, connack_code, connect_packet
from bench.procs import cpu_seconds
from plantnotify.broker.engines.nats.cluster import NatsCluster, local_layout
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.settings import load_settings

DISCONNECT = b"\xe0\x00"


async def _one(port: int, user: str, token: str, client_id: str) -> tuple[bool, float]:
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(connect_packet(client_id, user, token, 30, protocol=4))
        await writer.drain()
        packets = PacketReader()
        while True:
            data = await asyncio.wait_for(reader.read(4096), 10)
            if not data:
                return False, time.perf_counter() - t0
            for kind, _flags, body in packets.feed(data):
                if kind == 2:
                    ok = connack_code(body) == 0
                    elapsed = time.perf_counter() - t0
                    if ok:
                        writer.write(DISCONNECT)
                        await writer.drain()
                    return ok, elapsed
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _run(
    ports: list[int], secret_settings: object, seconds: float, concurrency: int, users: int
) -> dict[str, object]:
    signer = secret_settings.mqtt_signer  # type: ignore[attr-defined]
    pool = [f"nc{secrets.token_hex(2)}{i}" for i in range(users or 4000)]
    tokens = {u: mint_mqtt_token(signer, u, 3600) for u in pool}
    counter = itertools.count()
    latencies: list[float] = []
    refused = 0
    errors = 0
    deadline = time.monotonic() + seconds

    async def client(k: int) -> None:
        nonlocal refused, errors
        while time.monotonic() < deadline:
            n = next(counter)
            user = pool[n % len(pool)]
            try:
                ok, elapsed = await _one(ports[n % len(ports)], user, tokens[user], f"{user}-{n}")
            except (OSError, TimeoutError, ValueError):
                errors += 1
                continue
            if ok:
                latencies.append(elapsed)
            else:
                refused += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    wall = time.monotonic() - t0
    lat = sorted(latencies)
    return {
        "accepted": len(lat),
        "refused": refused,
        "errors": errors,
        "seconds": round(wall, 2),
        "accepted_per_s": round(len(lat) / wall, 1),
        "p50_ms": round(statistics.median(lat) * 1000, 2) if lat else None,
        "p99_ms": round(lat[int(0.99 * (len(lat) - 1))] * 1000, 2) if lat else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--users", type=int, default=0)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="natsconnect-"))
    settings = load_settings(
        environment="test",
        jwt_secret=secrets.token_hex(32),
        broker_engine="nats",
        log_level="WARNING",
        mqtt_max_connections_per_user=5,
    )
    cluster = NatsCluster(settings, local_layout(data))
    cluster.start()
    try:
        ports = cluster.mqtt_ports
        asyncio.run(_run(ports, settings, 2.0, 8, 0))  # warm-up: streams, buckets, code paths
        callouts = [c.proc.pid for c in cluster.callouts if c.proc]
        nodes = [c.proc.pid for c in cluster.nodes if c.proc]
        c0 = sum(map(cpu_seconds, callouts))
        n0 = sum(map(cpu_seconds, nodes))
        load0 = os.getloadavg()[0]
        out = asyncio.run(_run(ports, settings, args.seconds, args.concurrency, args.users))
        accepted = max(1, int(out["accepted"]))  # type: ignore[call-overload]
        out["callout_cpu_us_per_connect"] = round(
            (sum(map(cpu_seconds, callouts)) - c0) / accepted * 1e6, 1
        )
        out["nodes_cpu_us_per_connect"] = round(
            (sum(map(cpu_seconds, nodes)) - n0) / accepted * 1e6, 1
        )
        out.update(
            label=args.label,
            users=args.users or "one per connection",
            concurrency=args.concurrency,
            load_before=round(load0, 2),
            load_after=round(os.getloadavg()[0], 2),
        )
        print(json.dumps(out))
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
