"""Device agent: subscribed clients that timestamp every event they receive.

Lean clients (``bench.leanclient``) on one event loop running in a background
thread, over MQTT/TCP or MQTT over WebSocket. A message's key is the last topic level (the
analysis id); its arrival time is ``time.monotonic_ns()`` when its bytes were read.
CLOCK_MONOTONIC is one clock for every process on the machine, so arrival times can be
compared with the sender's timestamps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from bench.agent import serve
from bench.leanclient import LeanClient, new_loop

_loop = new_loop()
threading.Thread(target=_loop.run_forever, name="devices", daemon=True).start()
_clients: list[LeanClient] = []
_received: dict[str, int] = {}
_duplicates = 0
_match: bytes | None = None  # only messages whose payload contains these bytes count


def _on_publish(topic: str, payload: bytes, now: int) -> None:
    global _duplicates
    if _match is not None and _match not in payload:
        return
    key = topic.rsplit("/", 1)[-1]
    if key in _received:
        _duplicates += 1
    else:
        _received[key] = now


def _run(coro: Any, timeout: float) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, _loop).result(timeout)


async def _connect(args: dict[str, Any]) -> None:
    websocket = args.get("transport", "tcp") == "websockets"

    async def one(spec: dict[str, Any]) -> None:
        client = LeanClient(
            _loop,
            host=args.get("host", "127.0.0.1"),
            port=int(args["port"]),
            websocket=websocket,
            protocol=int(args.get("protocol", 5)),
            on_publish=_on_publish,
        )
        await client.start(
            spec["client_id"], spec["username"], spec["password"], subscribe=[spec["filter"]]
        )
        _clients.append(client)

    await asyncio.gather(*(one(spec) for spec in args["clients"]))


def connect(args: dict[str, Any]) -> dict[str, Any]:
    global _match
    if args.get("match"):
        _match = str(args["match"]).encode()
    started = time.monotonic()
    _run(_connect(args), float(args.get("connect_timeout", 60)))
    return {"clients": len(_clients), "seconds": time.monotonic() - started}


def collect(args: dict[str, Any]) -> dict[str, Any]:
    """Wait for ``expect`` distinct keys (or ``wait`` seconds), then hand them over and reset."""
    expect = int(args["expect"])
    deadline = time.monotonic() + float(args.get("wait", 30))
    while len(_received) < expect and time.monotonic() < deadline:
        time.sleep(0.02)
    received, duplicates = _run(_swap(), 10)
    lost = sum(1 for c in _clients if c.closed.done())
    return {"received": received, "duplicates": duplicates, "clients_lost": lost}


async def _swap() -> tuple[dict[str, int], int]:
    # On the loop thread, so no arrival is recorded into the dict being handed over.
    global _received, _duplicates
    received, duplicates = _received, _duplicates
    _received, _duplicates = {}, 0
    return received, duplicates


def quit_(args: dict[str, Any]) -> dict[str, Any]:
    async def close_all() -> None:
        for client in _clients:
            client.close()
        await asyncio.sleep(0.1)

    _run(close_all(), 5)
    return {}


if __name__ == "__main__":
    serve({"connect": connect, "collect": collect, "quit": quit_})
