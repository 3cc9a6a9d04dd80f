"""Where presence comes from on the NATS engine: ``$SYS`` events and CONNZ, for a system user.

* ``$SYS.ACCOUNT.APP.CONNECT`` / ``DISCONNECT``: every node announces its clients of the APP
  account (devices and services); ``client.user`` is the MQTT username (the callout names the
  user after it), ``client.client_id`` the MQTT client id, ``client.id`` + ``server.id`` the
  connection;
* ``$SYS.SERVER.*.SHUTDOWN``: a node stopping (its clients are gone);
* ``$SYS.REQ.SERVER.PING.CONNZ``: every node's connections, for a snapshot (at start, after a
  reconnect, and now and then: a SIGKILLed node announces nothing).

Used by the auth callout (the per-user cap) and the bridge (who is online), each with a
:class:`~plantnotify.broker.engines.nats.ledger.Ledger`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from plantnotify.broker.engines.nats.config import APP_ACCOUNT
from plantnotify.broker.engines.nats.ledger import ConnKey

CONNECT_EVENTS = f"$SYS.ACCOUNT.{APP_ACCOUNT}.CONNECT"
DISCONNECT_EVENTS = f"$SYS.ACCOUNT.{APP_ACCOUNT}.DISCONNECT"
SHUTDOWN_EVENTS = "$SYS.SERVER.*.SHUTDOWN"
CONNZ_PING = "$SYS.REQ.SERVER.PING.CONNZ"


@dataclass(frozen=True)
class ConnEvent:
    key: ConnKey
    user: str
    client_id: str


def parse_conn_event(data: bytes) -> ConnEvent | None:
    """A CONNECT/DISCONNECT event of the APP account, or None for anything else."""
    try:
        body: dict[str, Any] = json.loads(data)
        client = body.get("client") or {}
        server = body.get("server") or {}
        if client.get("acc", APP_ACCOUNT) != APP_ACCOUNT or "id" not in client:
            return None
        return ConnEvent(
            (str(server.get("id", "")), int(client["id"])),
            str(client.get("user", "")),
            str(client.get("client_id", "")),
        )
    except (ValueError, TypeError, AttributeError):
        return None


def parse_shutdown(data: bytes) -> str | None:
    """The id of the server that is shutting down."""
    try:
        body = json.loads(data)
        server_id = (body.get("server") or {}).get("id") or body.get("id")
    except (ValueError, AttributeError):
        return None
    return str(server_id) if server_id else None


async def connz_snapshot(
    nc: NatsClient, *, wait: float = 0.6, limit: int = 1_000_000
) -> tuple[set[str], list[tuple[ConnKey, str, str]]]:
    """(server ids that answered, [(key, user, MQTT client id)]) of the APP account.

    Every node answers the PING; answers are collected until none came for ``wait`` seconds.
    """
    inbox = nc.new_inbox()
    replies: asyncio.Queue[Msg] = asyncio.Queue()

    async def collect(msg: Msg) -> None:
        await replies.put(msg)

    sub = await nc.subscribe(inbox, cb=collect)
    servers: set[str] = set()
    conns: list[tuple[ConnKey, str, str]] = []
    try:
        body = {"acc": APP_ACCOUNT, "auth": True, "limit": limit}
        await nc.publish(CONNZ_PING, json.dumps(body).encode(), reply=inbox)
        await nc.flush()
        while True:
            try:
                msg = await asyncio.wait_for(replies.get(), wait)
            except TimeoutError:
                break
            data = json.loads(msg.data)
            server_id = str((data.get("server") or {}).get("id", ""))
            servers.add(server_id)
            for conn in (data.get("data") or {}).get("connections") or []:
                if conn.get("account", APP_ACCOUNT) != APP_ACCOUNT:
                    continue
                user = conn.get("authorized_user") or conn.get("name") or ""
                conns.append(((server_id, int(conn["cid"])), user, conn.get("mqtt_client", "")))
    finally:
        await sub.unsubscribe()
    return servers, conns
