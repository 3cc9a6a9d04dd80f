"""Soak device agent: persistent-session subscribers that reconnect, counting final events.

Each client connects with a persistent session (MQTT 5, clean start off, session expiry),
subscribes to its user's analyses, and when the connection drops (broker SIGKILL) reconnects
every half second until it is back, recording how long it was away. A final event
(``AnalysisCompleted``/``AnalysisFailed``) counts once per analysis id, whether it arrived live,
from the persistent session's queue or as a retained message after a re-subscribe.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

from bench.agent import serve
from bench.leanclient import LeanClient, new_loop

_loop = new_loop()
threading.Thread(target=_loop.run_forever, name="devices", daemon=True).start()
_received: set[str] = set()
_outages: list[float] = []  # seconds, one per drop that ended in a reconnect
_down: dict[str, float] = {}  # client id -> when it dropped (still away)
_connected = 0
_stop = False
FINAL = (b'"AnalysisCompleted"', b'"AnalysisFailed"')


def _on_publish(topic: str, payload: bytes, now: int) -> None:
    if FINAL[0] in payload or FINAL[1] in payload:
        _received.add(topic.rsplit("/", 1)[-1])


async def _keep(args: dict[str, Any], spec: dict[str, Any], ready: asyncio.Event) -> None:
    global _connected
    first = True
    while not _stop:
        client = LeanClient(
            _loop,
            host="127.0.0.1",
            port=int(args["port"]),
            protocol=5,
            on_publish=_on_publish,
        )
        try:
            await client.start(
                spec["client_id"],
                spec["username"],
                spec["password"],
                subscribe=[spec["filter"]],
                keepalive=60,
                clean=False,
                session_expiry=int(args.get("session_expiry", 3600)),
            )
        except (TimeoutError, OSError, ConnectionError, PermissionError):
            client.close()
            await asyncio.sleep(0.5 + random.random() * 0.2)
            continue
        if spec["client_id"] in _down:
            _outages.append(time.monotonic() - _down.pop(spec["client_id"]))
        _connected += 1
        if first:
            first = False
            ready.set()
        await client.closed
        _connected -= 1
        if _stop:
            return
        _down[spec["client_id"]] = time.monotonic()
        await asyncio.sleep(0.5 + random.random() * 0.2)


async def _start(args: dict[str, Any]) -> None:
    events = []
    for spec in args["clients"]:
        ready = asyncio.Event()
        events.append(ready)
        _loop.create_task(_keep(args, spec, ready))
    await asyncio.gather(*(e.wait() for e in events))


def connect(args: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    asyncio.run_coroutine_threadsafe(_start(args), _loop).result(
        float(args.get("connect_timeout", 120))
    )
    return {"clients": _connected, "seconds": time.monotonic() - started}


def status(args: dict[str, Any]) -> dict[str, Any]:
    now = time.monotonic()
    away = [now - t for t in _down.values()]
    return {
        "connected": _connected,
        "received": len(_received),
        "longest_outage_s": max([*_outages, *away], default=0.0),
        "reconnects": len(_outages),
    }


def collect(args: dict[str, Any]) -> dict[str, Any]:
    """Which of ``expect`` analysis ids arrived (waiting up to ``wait`` s for the rest)."""
    expect = set(args["expect"])
    deadline = time.monotonic() + float(args.get("wait", 60))
    while not expect <= _received and time.monotonic() < deadline:
        time.sleep(0.2)
    return {"missing": sorted(expect - _received), **status({})}


def quit_(args: dict[str, Any]) -> dict[str, Any]:
    global _stop
    _stop = True
    return {}


if __name__ == "__main__":
    serve({"connect": connect, "status": status, "collect": collect, "quit": quit_})
