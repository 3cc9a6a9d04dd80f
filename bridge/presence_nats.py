"""Presence on the NATS engine: ``$SYS`` connect/disconnect events and CONNZ snapshots.

An I/O thread (asyncio, nats-py) holds a system-user connection to the cluster (the user's nkey
is derived from JWT_SECRET, see plantnotify.broker.engines.nats.keys). It posts everything it
hears to the bridge loop's inbox as :class:`Message` items on internal topics, so the ledger is
only ever touched by the loop thread:

* every CONNECT / DISCONNECT event of the APP account, as it comes;
* a CONNZ snapshot of every node after each (re)connect (that puts the source in sync) and
  every ``resync_seconds`` (a SIGKILLed node sends no DISCONNECT for its clients);
* "lost" when the system connection drops: nothing is known until the next snapshot, exactly
  like the Mosquitto source forgets its picture when it loses the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bridge import metrics
from bridge.presence import PresenceUpdate
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
from plantnotify.mqtt import ConnectionState, Message
from plantnotify.settings import Settings

log = logging.getLogger("plantnotify.bridge")

# Internal topics of the inbox items this source posts (never on the wire).
_PREFIX = "\x00nats-presence/"
T_CONNECT = _PREFIX + "connect"
T_DISCONNECT = _PREFIX + "disconnect"
T_SHUTDOWN = _PREFIX + "shutdown"
T_SNAPSHOT = _PREFIX + "snapshot"
T_LOST = _PREFIX + "lost"


class NatsPresence:
    def __init__(
        self,
        settings: Settings,
        post: Callable[[Message], None],
        *,
        resync_seconds: float = 30.0,
        name: str = "bridge",
    ) -> None:
        self.ready = threading.Event()
        self._post = post
        self._servers = settings.nats_url_list
        self._seed = NatsKeys.derive(settings.jwt_secret).system.seed_str
        self._resync = resync_seconds
        self._name = name
        self._ledger = Ledger()
        self._known = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: NatsClient | None = None
        self._stop: asyncio.Event | None = None

    # --- what the bridge asks (loop thread) ----------------------------------------------------

    def live(self, user_id: str) -> int | None:
        if not self._known:
            return None
        return len(self._ledger.live(user_id))

    @property
    def wants_wake(self) -> float | None:
        return None

    def sync_step(self) -> bool:
        return False

    def connection_changed(self, state: ConnectionState | None) -> None:
        """The bridge's MQTT connection says nothing about presence here."""

    def route(self, msg: Message) -> PresenceUpdate | None:
        if not msg.topic.startswith(_PREFIX):
            return None
        topic = msg.topic
        if topic == T_LOST:
            if self._known:
                log.warning("lost the NATS system connection; forgetting who is online")
            self._known = False
            self._ledger = Ledger()
            self.ready.clear()
            self._gauges()
            return PresenceUpdate()
        if topic == T_SNAPSHOT:
            return self._apply_snapshot(msg.payload)
        if topic == T_SHUTDOWN:
            server_id = parse_shutdown(msg.payload)
            if server_id is None:
                return PresenceUpdate()
            return self._changes(lambda: self._ledger.server_gone(server_id))
        event = parse_conn_event(msg.payload)
        if event is None:
            return PresenceUpdate()
        if topic == T_CONNECT:
            self._ledger.connected(event.key, event.user, event.client_id)
            self._gauges()
            return PresenceUpdate()
        return self._changes(lambda: self._ledger.disconnected(event.key))

    def _changes(self, change: Callable[[], None]) -> PresenceUpdate:
        before = self._ledger.users()
        change()
        after = self._ledger.users()
        self._gauges()
        if not self._known:
            return PresenceUpdate()
        return PresenceUpdate(offline=tuple(sorted(before - after)))

    def _apply_snapshot(self, payload: bytes) -> PresenceUpdate:
        data = json.loads(payload)
        conns = [((s, int(c)), u, cid) for (s, c), u, cid in data["conns"]]
        was_known = self._known
        before = self._ledger.users()
        self._ledger.resync(float(data["started"]), data["servers"], conns)
        self._known = True
        after = self._ledger.users()
        self._gauges()
        if not was_known:
            totals = len(after)
            log.info("session picture in sync", extra={"live_users": totals, "source": "nats"})
            return PresenceUpdate(synced=True)
        return PresenceUpdate(offline=tuple(sorted(before - after)))

    def _gauges(self) -> None:
        users = self._ledger.users() if self._known else set()
        metrics.LIVE_SESSIONS.set(len(self._ledger) if self._known else 0)
        metrics.LIVE_USERS.set(len(users))
        metrics.IN_SYNC.set(1 if self._known else 0)

    # --- the I/O thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nats-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc: NatsClient | None = None
        resync: asyncio.Task[None] | None = None
        try:
            while nc is None and not self._stop.is_set():
                try:
                    nc = await nats.connect(
                        servers=self._servers,
                        nkeys_seed_str=self._seed,
                        name=f"plantnotify-{self._name}-presence",
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=0.5,
                        connect_timeout=2,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                    )
                except Exception as exc:  # no server reachable yet: keep trying
                    log.warning("NATS presence: cannot connect (%s); retrying", exc)
                    await asyncio.sleep(1.0)
            if nc is None:
                return
            self._nc = nc
            await nc.subscribe(CONNECT_EVENTS, cb=self._forward(T_CONNECT))
            await nc.subscribe(DISCONNECT_EVENTS, cb=self._forward(T_DISCONNECT))
            await nc.subscribe(SHUTDOWN_EVENTS, cb=self._forward(T_SHUTDOWN))
            await nc.flush()
            await self._snapshot()
            resync = asyncio.create_task(self._resync_loop())
            await self._stop.wait()
        finally:
            if resync is not None:
                resync.cancel()
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()

    def _forward(self, topic: str) -> Callable[[Msg], Awaitable[None]]:
        async def forward(msg: Msg) -> None:
            self._post(Message(topic, msg.data))

        return forward

    async def _snapshot(self) -> None:
        started = time.monotonic()
        assert self._nc is not None
        servers, conns = await connz_snapshot(self._nc)
        body = {"started": started, "servers": sorted(servers), "conns": conns}
        self._post(Message(T_SNAPSHOT, json.dumps(body).encode()))

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self._resync)
            try:
                await self._snapshot()
            except Exception as exc:
                log.warning("NATS presence: re-snapshot failed: %s", exc)

    async def _on_disconnected(self) -> None:
        self._post(Message(T_LOST, b""))

    async def _on_reconnected(self) -> None:
        try:
            await self._snapshot()
        except Exception as exc:
            log.warning("NATS presence: snapshot after reconnect failed: %s", exc)
