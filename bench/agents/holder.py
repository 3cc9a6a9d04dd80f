"""Connection agent: opens many authenticated MQTT connections and holds them idle.

One event loop, one :class:`LeanClient` per connection, credentials made before the clock
starts (``open``: hold them; with ``churn``: CONNECT, CONNACK, DISCONNECT, next): the agent must cost much less per connection than the broker, or it would measure
itself. Every process may hold at most 20,000 open files here, so the bench spreads the
connections over several of these agents.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bench import mqttwire as w
from bench.agent import serve
from bench.leanclient import LeanClient, new_loop
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from plantnotify.contracts.topics import user_filter

_loop = new_loop()
_conns: list[LeanClient] = []


def derived_password(seed: str, user_id: str) -> str:
    """Password-file mode: a per-user password both the bench and this agent can compute."""
    return hashlib.sha256(f"{seed}:{user_id}".encode()).hexdigest()[:32]


def _credentials(args: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(client id, username, password) for connections first..first+count-1.

    ``per_user`` connections share a user (client ids ``<user>-<k>``), like a user's devices.
    """
    first, count = int(args["first"]), int(args["count"])
    per_user = int(args.get("per_user", 1))
    ids = []
    for i in range(first, first + count):
        user = f"{args['user_prefix']}{i // per_user}"
        ids.append((user if per_user == 1 else f"{user}-{i % per_user}", user))
    mode = args["mode"]
    if mode == "jwt":
        algorithm = args.get("algorithm", "HS256")
        key: Any = args["secret"]
        if algorithm != "HS256":
            # PyJWT would parse the PEM again for every token (~50 ms each for RSA here).
            key = load_pem_private_key(key.encode(), password=None)
        signer = MqttSigner(key=key, audience=args["audience"], algorithm=algorithm)
        ttl = int(args.get("ttl", 3600))
        tokens = {u: mint_mqtt_token(signer, u, ttl) for _, u in ids}
        return [(c, u, tokens[u]) for c, u in ids]
    if mode == "password":
        return [(c, u, derived_password(args["seed"], u)) for c, u in ids]
    raise ValueError(f"unknown mode {mode!r}")


async def _open_one(
    host: str,
    port: int,
    cred: tuple[str, str, str],
    keepalive: int,
    limit: float,
    source_ip: str | None,
    subscribe: bool,
    auth_method: str | None = None,
) -> tuple[str, float, LeanClient | None]:
    client_id, user, password = cred
    t0 = time.monotonic()
    client = LeanClient(_loop, host=host, port=port, protocol=5 if auth_method else 4)
    try:
        async with asyncio.timeout(limit):
            await client.start(
                client_id,
                user,
                password,
                keepalive=keepalive,
                source_ip=source_ip,
                subscribe=[user_filter(user)] if subscribe else None,
                auth_method=auth_method,
            )
    except ConnectionRefusedError as exc:
        client.close()
        return f"refused: {str(exc).rsplit(': ', 1)[-1]}", 0.0, None
    except (OSError, TimeoutError, ValueError) as exc:
        client.close()
        return f"{type(exc).__name__}: {exc}"[:80], 0.0, None
    return "ok", time.monotonic() - t0, client


async def _open(args: dict[str, Any], creds: list[tuple[str, str, str]]) -> dict[str, Any]:
    host, port = args.get("host", "127.0.0.1"), int(args["port"])
    keepalive = int(args.get("keepalive", 900))
    timeout = float(args.get("connect_timeout", 30))
    source_ip = args.get("source_ip")
    subscribe = bool(args.get("subscribe", False))
    churn = bool(args.get("churn", False))
    auth_method = args.get("auth_method")  # MQTT 5 enhanced authentication with the token
    sem = asyncio.Semaphore(int(args.get("concurrency", 64)))

    async def guarded(cred: tuple[str, str, str]) -> tuple[str, float]:
        async with sem:
            outcome, seconds, client = await _open_one(
                host, port, cred, keepalive, timeout, source_ip, subscribe, auth_method
            )
            if client is not None:
                if churn:
                    client.close()  # connect, authenticate, DISCONNECT, next
                else:
                    _conns.append(client)
            return outcome, seconds

    cpu0 = time.process_time()
    start_ns = time.monotonic_ns()
    results = await asyncio.gather(*(guarded(c) for c in creds))
    end_ns = time.monotonic_ns()
    cpu = time.process_time() - cpu0
    outcomes = Counter(r for r, _ in results)
    latencies = sorted(round(t * 1000, 3) for r, t in results if r == "ok")
    return {
        "opened": outcomes.pop("ok", 0),
        "failed": sum(outcomes.values()),
        "errors": dict(outcomes.most_common(5)),
        "start_ns": start_ns,
        "end_ns": end_ns,
        "agent_cpu_seconds": cpu,
        "connect_ms": latencies,
    }


def open_(args: dict[str, Any]) -> dict[str, Any]:
    return _loop.run_until_complete(_open(args, _credentials(args)))


async def _ping_all(wait: float) -> int:
    waiting = []
    for conn in _conns:
        if not conn.closed.done():
            conn.pong = _loop.create_future()
            conn.send(w.PINGREQ)
            waiting.append(conn.pong)
    if not waiting:
        return 0
    done, _ = await asyncio.wait(waiting, timeout=wait)
    return sum(1 for f in done if f.result())


def ping(args: dict[str, Any]) -> dict[str, Any]:
    """How many held connections still answer a PINGREQ (i.e. are really alive)."""
    alive = _loop.run_until_complete(_ping_all(float(args.get("wait", 20))))
    for conn in _conns:
        conn.pong = None
    return {"alive": alive}


def close(args: dict[str, Any]) -> dict[str, Any]:
    n = len(_conns)
    for conn in _conns:
        conn.close()
    _loop.run_until_complete(asyncio.sleep(0.2))
    _conns.clear()
    return {"closed": n}


if __name__ == "__main__":
    serve({"open": open_, "ping": ping, "close": close, "quit": close})
