"""The auth-callout service: answers ``$SYS.REQ.USER.AUTH`` for one NATS cluster.

Run one per node, all in the queue group ``plantnotify-auth-callout``: the server sends each
request to one of them, so one dying does not block connects (its connection drops, the group
answers). Two connections:

* as the ``callout`` user (AUTH account, exempt from the callout): the requests;
* as the ``system`` user (SYS account): presence, for the per-user connection cap
  (``$SYS.ACCOUNT.APP.CONNECT`` / ``DISCONNECT``, ``$SYS.SERVER.*.SHUTDOWN``, and CONNZ of
  every node at start and every ``resync_seconds``).

A granted user gets a user JWT in the APP account, named after the user (so presence events
carry the MQTT username), expiring with the token plus the clock leeway (the server disconnects
it then, as the plugin does), and allowed
only ``users.{sub}`` / ``users.{sub}.>`` to subscribe and ``users.{sub}.receipts`` to publish
(MQTT ``/`` is NATS ``.``). Services (``role: service``) get no restrictions and no cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from plantnotify.authcallout import natsjwt
from plantnotify.authcallout.rules import Refused, TokenConfig, check_connect
from plantnotify.broker.engines.nats.config import APP_ACCOUNT
from plantnotify.broker.engines.nats.keys import NatsKeys
from plantnotify.broker.engines.nats.ledger import Ledger
from plantnotify.broker.engines.nats.presence import (
    CONNECT_EVENTS,
    DISCONNECT_EVENTS,
    SHUTDOWN_EVENTS,
    connz_snapshot,
    parse_conn_event,
    parse_shutdown,
)
from plantnotify.settings import Settings

log = logging.getLogger("plantnotify.authcallout")

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
QUEUE_GROUP = "plantnotify-auth-callout"


@dataclass
class Counts:
    """CONNECT outcomes since start (the same labels as the plugin's)."""

    by_outcome: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1


class AuthCallout:
    def __init__(
        self,
        settings: Settings,
        servers: Sequence[str],
        *,
        resync_seconds: float = 30.0,
        name: str = "auth-callout",
        heartbeat: Path | None = None,
    ) -> None:
        self.heartbeat = heartbeat
        self.servers = list(servers)
        self.keys = NatsKeys.derive(settings.jwt_secret)
        self.issuer = self.keys.issuer.keypair
        self.tokens = TokenConfig.from_settings(settings)
        self.max_connections = settings.mqtt_max_connections_per_user
        self.resync_seconds = resync_seconds
        self.name = name
        self.ledger = Ledger()
        self.counts = Counts()
        self._auth: NatsClient | None = None
        self._sys: NatsClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    async def _connect(self, seed: str, name: str) -> NatsClient:
        return await nats.connect(
            servers=self.servers,
            nkeys_seed_str=seed,
            name=name,
            dont_randomize=True,  # the first server is this node: stay on it while it lives
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            allow_reconnect=True,
        )

    async def start(self) -> None:
        self._sys = await self._connect(self.keys.system.seed_str, f"plantnotify-{self.name}-sys")
        await self._sys.subscribe(CONNECT_EVENTS, cb=self._on_connect_event)
        await self._sys.subscribe(DISCONNECT_EVENTS, cb=self._on_disconnect_event)
        await self._sys.subscribe(SHUTDOWN_EVENTS, cb=self._on_shutdown_event)
        await self._sys.flush()
        await self.resync()
        self._auth = await self._connect(self.keys.callout.seed_str, f"plantnotify-{self.name}")
        await self._auth.subscribe(AUTH_SUBJECT, queue=QUEUE_GROUP, cb=self._on_request)
        await self._auth.flush()
        self._tasks.append(asyncio.create_task(self._resync_loop()))
        if self.heartbeat is not None:
            self._tasks.append(asyncio.create_task(self._beat()))
        self.ready.set()
        log.info(
            "auth callout ready on %s (%d live connections known)",
            ", ".join(self.servers),
            len(self.ledger),
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for nc in (self._auth, self._sys):
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.drain()

    async def resync(self) -> None:
        assert self._sys is not None
        started = time.monotonic()
        servers, conns = await connz_snapshot(self._sys)
        self.ledger.resync(started, servers, conns)

    async def _beat(self) -> None:
        """Touch the heartbeat file while both connections are up (container health check)."""
        assert self.heartbeat is not None
        while True:
            if all(nc is not None and nc.is_connected for nc in (self._auth, self._sys)):
                self.heartbeat.touch()
            await asyncio.sleep(5.0)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            try:
                await self.resync()
            except Exception:
                log.exception("presence re-snapshot failed; keeping the event-built picture")

    # --- presence ---------------------------------------------------------------------------

    async def _on_connect_event(self, msg: Msg) -> None:
        event = parse_conn_event(msg.data)
        if event is not None:
            self.ledger.connected(event.key, event.user, event.client_id)

    async def _on_disconnect_event(self, msg: Msg) -> None:
        event = parse_conn_event(msg.data)
        if event is not None:
            self.ledger.disconnected(event.key)

    async def _on_shutdown_event(self, msg: Msg) -> None:
        server_id = parse_shutdown(msg.data)
        if server_id:
            self.ledger.server_gone(server_id)

    # --- decisions --------------------------------------------------------------------------

    async def _on_request(self, msg: Msg) -> None:
        try:
            claims = natsjwt.decode_request(msg.data.decode())
        except (natsjwt.BadRequest, UnicodeDecodeError) as exc:
            log.warning("ignoring a malformed auth request: %s", exc)
            return
        answer = self.decide(claims)
        await msg.respond(answer.encode())

    def decide(self, claims: dict[str, Any]) -> str:
        """The signed authorization response for one request."""
        req = claims["nats"]
        user_nkey = str(req.get("user_nkey", ""))
        server = req.get("server_id") or {}
        server_id = str(server.get("id", ""))
        client = req.get("client_info") or {}
        opts = req.get("connect_opts") or {}
        username = str(opts.get("user", ""))
        client_id = str(client.get("mqtt_id", ""))
        try:
            if client.get("type") != "mqtt" and client.get("kind", "Client") == "Client":
                # plain NATS clients: services only (no MQTT client id to check)
                client_id = client_id or username
            accepted = check_connect(self.tokens, username, client_id, str(opts.get("pass", "")))
            if client.get("type") != "mqtt" and not accepted.service:
                raise Refused("identity", "only services may connect without MQTT")
            if not accepted.service:
                owner = self.ledger.owner_of(client_id)
                if owner is not None and owner != accepted.sub:
                    raise Refused("identity", "client id is live for another user")
                others = self.ledger.count_other(accepted.sub, client_id)
                if others >= self.max_connections:
                    raise Refused(
                        "limit",
                        f"{others} live connections (max_connections_per_user "
                        f"{self.max_connections})",
                    )
        except Refused as refusal:
            self.counts.add(refusal.outcome)
            log.info(
                "refused CONNECT user=%s client=%s: %s",
                username[:64],
                client_id[:64],
                refusal.reason,
            )
            return natsjwt.response(
                self.issuer, user_nkey=user_nkey, server_id=server_id, error=refusal.reason
            )
        self.counts.add("accepted")
        if not accepted.service:
            self.ledger.grant((server_id, int(client.get("id", 0))), accepted.sub, client_id)
        sub = accepted.sub
        token = natsjwt.user_jwt(
            self.issuer,
            user_nkey,
            name=sub,
            account=APP_ACCOUNT,
            # the same moment the plugin kicks: exp plus the clock leeway
            expires=accepted.expires + self.tokens.leeway,
            pub_allow=None if accepted.service else [f"users.{sub}.receipts"],
            sub_allow=None if accepted.service else [f"users.{sub}", f"users.{sub}.>"],
        )
        log.debug("authenticated user=%s client=%s", sub, client_id)
        return natsjwt.response(
            self.issuer, user_nkey=user_nkey, server_id=server_id, user_token=token
        )


async def serve(callout: AuthCallout, stop: asyncio.Event) -> None:
    await callout.start()
    try:
        await stop.wait()
    finally:
        await callout.stop()
