"""The auth-callout service: answers ``$SYS.REQ.USER.AUTH`` for one NATS cluster.

Run one per node, all in the queue group ``plantnotify-auth-callout``: the server sends each
request to one of them, so one dying does not block connects (its connection drops, the group
answers). Two connections:

* as the ``callout`` user (AUTH account, exempt from the callout): the requests;
* as the ``system`` user (SYS account): presence, for the per-user connection cap
  (``$SYS.ACCOUNT.APP.CONNECT`` / ``DISCONNECT``, ``$SYS.SERVER.*.SHUTDOWN``, and CONNZ of
  every node at start and every ``resync_seconds``).

The cap is exact cluster-wide: every user grant is a compare-and-set on the user's key of a
JetStream key-value bucket in the AUTH account (:mod:`plantnotify.authcallout.capstore`), the
presence picture deciding which recorded connections have ended. Requests are decided
concurrently (each in its own task), so a grant waiting for the bucket does not hold up others.

and a third, as the ``feed`` user (APP account, exempt from the callout, allowed only a few
subjects): revocation lines from the API's feed (``$CONTROL.plantnotify.revocations``),
and our requests for all of them (``plantnotify.broker.revocations.resync``, a ``BrokerBoot``
with this callout's boot id, repeated until the feed's ``SYNC``). On it the callout also does
for the API what the Mosquitto plugin does (issue 14's persistent-session cap):

* the MQTT gateway writes a record per session on every CONNECT (``$MQTT.sess.<hash>``,
  ``clean`` false for a session that outlives its connection); for a user CONNECT this
  callout granted, a persistent record becomes a ``PersistentSessionOpened`` on
  ``plantnotify.broker.persistent-sessions`` (only the granting callout knows the user);
* a request on ``$CONTROL.plantnotify.sessions`` (payload: a request id; one callout of a
  queue group answers) gets the whole sessions picture from the presence ledger on
  ``plantnotify.broker.sessions``, as the plugin's ``SessionsPicture`` parts. A user CONNECT whose token is
revoked is refused; a line that revokes something closes the user's live connections on every
node (``$SYS.REQ.SERVER.<id>.KICK``), as the plugin does. With ``MQTT_REVOCATION_SYNC_SECONDS``
a callout refuses users until its sync came, for at most that long.

A granted user gets a user JWT in the APP account, named after the user (so presence events
carry the MQTT username), expiring with the token plus the clock leeway (the server disconnects
it then, as the plugin does), and allowed
only ``users.{sub}`` / ``users.{sub}.>`` to subscribe and ``users.{sub}.receipts`` to publish
(MQTT ``/`` is NATS ``.``). Services (``role: service``) get no restrictions and no cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from plantnotify.authcallout import natsjwt
from plantnotify.authcallout.capstore import CapStore, CapUnavailable
from plantnotify.authcallout.revocations import Revocations
from plantnotify.authcallout.rules import Refused, TokenConfig, check_connect
from plantnotify.broker.engines.nats.config import (
    APP_ACCOUNT,
    MQTT_SESSION_RECORDS,
    subject,
)
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
from plantnotify.contracts.events import (
    BrokerBoot,
    PersistentSessionOpened,
    SessionEntry,
    SessionsPicture,
)
from plantnotify.contracts.topics import (
    BROKER_PERSISTENT_SESSIONS_TOPIC,
    BROKER_REVOCATIONS_RESYNC_TOPIC,
    BROKER_REVOCATIONS_TOPIC,
    BROKER_SESSIONS_TOPIC,
    SESSIONS_REQUEST_TOPIC,
)
from plantnotify.settings import Settings

log = logging.getLogger("plantnotify.authcallout")

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
QUEUE_GROUP = "plantnotify-auth-callout"
REVOCATIONS_SUBJECT = subject(BROKER_REVOCATIONS_TOPIC)
RESYNC_SUBJECT = subject(BROKER_REVOCATIONS_RESYNC_TOPIC)
KICK_SUBJECT = "$SYS.REQ.SERVER.{}.KICK"
RESYNC_EVERY_SECONDS = 2.0  # ask the feed again until its SYNC for us came
KICK_AGAIN_SECONDS = 1.5  # a connection granted just before the line may not be kickable yet
PRUNE_SECONDS = 60.0
CAP_QUEUE_GROUP = "plantnotify-auth-callout-cap"  # one callout removes each ended connection
PICTURE_QUEUE_GROUP = "plantnotify-auth-callout-picture"  # one callout answers each request
PERSISTENT_SESSIONS_SUBJECT = subject(BROKER_PERSISTENT_SESSIONS_TOPIC)
PICTURE_REQUEST_SUBJECT = subject(SESSIONS_REQUEST_TOPIC)
PICTURE_SUBJECT = subject(BROKER_SESSIONS_TOPIC)
RECORD_WAIT_SECONDS = 30.0  # a grant whose session record has not come by then is forgotten
PICTURE_PART_USERS = 500
PICTURE_MAX_PARTS = 32
MAX_DECIDING = 256  # requests decided at once; more wait (the server retries after ~2 s)


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
        self.revocations = Revocations()
        self.boot_id = secrets.token_hex(16)
        self.sync_seconds = settings.mqtt_revocation_sync_seconds
        self.started = time.monotonic()
        self.synced = asyncio.Event()
        self._boots_seen: set[str] = {self.boot_id}  # resync requests seen since subscribing
        self._auth: NatsClient | None = None
        self._sys: NatsClient | None = None
        self._feed: NatsClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._deciding: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_DECIDING)
        self.cap: CapStore | None = None
        self.cap_fallbacks = 0  # grants decided without the bucket (it did not answer)
        # MQTT client id -> (user, granted at): user grants whose session record is awaited
        self._awaiting_record: dict[str, tuple[str, float]] = {}
        self.ready = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    async def _connect(
        self, seed: str, name: str, reconnected: Callable[[], Awaitable[None]] | None = None
    ) -> NatsClient:
        extra: dict[str, Any] = {} if reconnected is None else {"reconnected_cb": reconnected}
        return await nats.connect(
            servers=self.servers,
            nkeys_seed_str=seed,
            name=name,
            **extra,
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
        await self._sys.subscribe(
            DISCONNECT_EVENTS, queue=CAP_QUEUE_GROUP, cb=self._release_disconnected
        )
        await self._sys.flush()
        await self.resync()
        self._feed = await self._connect(
            self.keys.feed.seed_str, f"plantnotify-{self.name}-feed", self._feed_reconnected
        )
        await self._feed.subscribe(REVOCATIONS_SUBJECT, cb=self._on_revocations)
        await self._feed.subscribe(RESYNC_SUBJECT, cb=self._on_resync_request)
        await self._feed.subscribe(MQTT_SESSION_RECORDS, cb=self._on_session_record)
        await self._feed.subscribe(
            PICTURE_REQUEST_SUBJECT, queue=PICTURE_QUEUE_GROUP, cb=self._on_picture_request
        )
        await self._feed.flush()
        self._tasks.append(asyncio.create_task(self._ask_for_revocations()))
        self._auth = await self._connect(self.keys.callout.seed_str, f"plantnotify-{self.name}")
        self.cap = CapStore(self._auth, replicas=len(self.servers))
        try:
            await self.cap.open()
        except Exception as exc:  # JetStream not there yet: go on, open it in the background
            log.warning("connection-cap bucket not reachable yet (%s); retrying", exc)
            self._tasks.append(asyncio.create_task(self._open_cap()))
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

    async def _open_cap(self) -> None:
        assert self.cap is not None
        while not self.cap.ready:
            await asyncio.sleep(1.0)
            try:
                await self.cap.open()
                log.info("connection-cap bucket open")
            except Exception as exc:
                log.debug("connection-cap bucket: %s", exc)

    async def stop(self) -> None:
        for task in [*self._tasks, *self._deciding]:
            task.cancel()
        for nc in (self._auth, self._feed, self._sys):
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.drain()

    async def resync(self) -> None:
        assert self._sys is not None
        started, started_wall = time.monotonic(), time.time()
        servers, conns = await connz_snapshot(self._sys)
        self.ledger.resync(started, servers, conns, started_wall=started_wall)

    async def _beat(self) -> None:
        """Touch the heartbeat file while both connections are up (container health check)."""
        assert self.heartbeat is not None
        while True:
            conns = (self._auth, self._sys, self._feed)
            if all(nc is not None and nc.is_connected for nc in conns):
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

    async def _release_disconnected(self, msg: Msg) -> None:
        """Removes an ended connection from the user's key (this callout's turn in the queue
        group; a missed one is removed by the next write of that key)."""
        event = parse_conn_event(msg.data)
        if event is None or self.cap is None or not self.cap.ready or not event.user:
            return
        try:
            await self.cap.release(event.user, event.key, self.ledger.known_gone)
        except Exception as exc:
            log.debug("connection-cap release of %s: %s", event.user[:64], exc)

    # --- persistent sessions and the sessions picture (the API's session cap) -------------

    async def _on_session_record(self, msg: Msg) -> None:
        """A session record of a CONNECT this callout granted: persistent -> the notice."""
        try:
            body = json.loads(msg.data)
            client_id = str(body["id"])
        except (ValueError, KeyError, TypeError):
            return
        granted = self._awaiting_record.pop(client_id, None)
        if granted is None or body.get("clean") or self._feed is None:
            return
        notice = PersistentSessionOpened(
            user_id=granted[0], client_id=client_id, at=int(time.time() * 1000)
        )
        with contextlib.suppress(Exception):  # the API gets the next one (as with the plugin)
            await self._feed.publish(PERSISTENT_SESSIONS_SUBJECT, notice.to_json_bytes())

    def _await_record(self, user: str, client_id: str) -> None:
        now = time.monotonic()
        if len(self._awaiting_record) > 10_000:
            cutoff = now - RECORD_WAIT_SECONDS
            self._awaiting_record = {
                c: g for c, g in self._awaiting_record.items() if g[1] >= cutoff
            }
        self._awaiting_record[client_id] = (user, now)

    async def _on_picture_request(self, msg: Msg) -> None:
        """Every online user with their client ids, as the plugin answers the same request."""
        request_id = msg.data.decode(errors="replace").strip()
        if not request_id or self._feed is None:
            return
        entries = []
        for user in sorted(self.ledger.users()):
            ids = sorted({c.client_id for c in self.ledger.live(user)})
            entries.append(SessionEntry(user_id=user, connections=len(ids), client_ids=ids))
        size = max(PICTURE_PART_USERS, -(-len(entries) // PICTURE_MAX_PARTS))
        chunks = [entries[i : i + size] for i in range(0, len(entries), size)] or [[]]
        for number, chunk in enumerate(chunks, start=1):
            part = SessionsPicture(
                boot_id=self.boot_id,
                request_id=request_id,
                seq=0,
                at=int(time.time()),
                part=number,
                parts=len(chunks),
                sessions=chunk,
            )
            with contextlib.suppress(Exception):
                await self._feed.publish(PICTURE_SUBJECT, part.to_json_bytes())

    async def _on_shutdown_event(self, msg: Msg) -> None:
        server_id = parse_shutdown(msg.data)
        if server_id:
            self.ledger.server_gone(server_id)

    # --- revocations ------------------------------------------------------------------------

    async def _ask_for_revocations(self) -> None:
        """Asks the API's feed for every revocation in force until its SYNC for us came (and
        again after the feed connection was lost: lines may have been missed meanwhile)."""
        assert self._feed is not None
        next_prune = time.monotonic() + PRUNE_SECONDS
        while True:
            if not self.synced.is_set() and self._feed.is_connected:
                body = BrokerBoot(boot_id=self.boot_id, started_at=int(time.time()))
                with contextlib.suppress(Exception):
                    await self._feed.publish(RESYNC_SUBJECT, body.to_json_bytes())
            if time.monotonic() >= next_prune:
                self.revocations.prune(int(time.time()))
                next_prune = time.monotonic() + PRUNE_SECONDS
            await asyncio.sleep(RESYNC_EVERY_SECONDS)

    async def _feed_reconnected(self) -> None:
        """Lines may have been missed while the connection was down: ask for all of them
        again, under a new id (the feed answers each id once)."""
        self.boot_id = secrets.token_hex(16)
        self._boots_seen = {self.boot_id}
        self.synced.clear()

    async def _on_resync_request(self, msg: Msg) -> None:
        try:
            boot = BrokerBoot.model_validate_json(msg.data)
        except ValueError:
            return
        self._boots_seen.add(boot.boot_id)

    async def _on_revocations(self, msg: Msg) -> None:
        applied = self.revocations.apply(msg.data, int(time.time()))
        if applied.malformed or applied.full:
            log.warning(
                "revocations: %d malformed line(s), %d not remembered (too many)",
                applied.malformed,
                applied.full,
            )
        # A SYNC for any request seen after we subscribed: everything in force was sent after
        # that request, so after our subscription (another callout's request does as well).
        if not self.synced.is_set() and any(b in self._boots_seen for b in applied.synced_boots):
            self.synced.set()
            log.info("revocations synced: %d in force", len(self.revocations))
        for user in applied.kick:
            keys = [key for key, _ in self.ledger.live_keys(user)]
            if keys:
                log.info("revocation: disconnecting user=%s (%d connections)", user, len(keys))
                self._tasks.append(asyncio.create_task(self._kick(keys)))
        self._tasks = [t for t in self._tasks if not t.done()]

    async def _kick(self, keys: list[tuple[str, int]]) -> None:
        """Closes these connections, and once more a little later those still there (one
        granted just before the line may not have been registered by its node yet)."""
        for attempt in range(2):
            for server_id, cid in keys:
                if attempt and (server_id, cid) not in self.ledger:
                    continue
                await self._kick_one(server_id, cid)
            await asyncio.sleep(KICK_AGAIN_SECONDS)

    async def _kick_one(self, server_id: str, cid: int) -> None:
        if self._sys is None or not server_id:
            return
        try:
            await self._sys.request(
                KICK_SUBJECT.format(server_id), json.dumps({"cid": cid}).encode(), timeout=2.0
            )
        except Exception as exc:  # a node gone or busy: its own reconnects are refused anyway
            log.debug("kick of %s/%d: %s", server_id, cid, exc)

    def _waiting_for_revocations(self) -> bool:
        return (
            self.sync_seconds > 0
            and not self.synced.is_set()
            and time.monotonic() < self.started + self.sync_seconds
        )

    # --- decisions --------------------------------------------------------------------------

    async def _on_request(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._answer(msg))
        self._deciding.add(task)
        task.add_done_callback(self._deciding.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            try:
                claims = natsjwt.decode_request(msg.data.decode())
            except (natsjwt.BadRequest, UnicodeDecodeError) as exc:
                log.warning("ignoring a malformed auth request: %s", exc)
                return
            answer = await self.decide(claims)
            await msg.respond(answer.encode())
        except Exception:
            log.exception("auth request not answered")
        finally:
            self._slots.release()

    async def _admit_cluster_wide(self, user: str, key: tuple[str, int], client_id: str) -> None:
        """Records the grant in the user's key of the bucket, or raises Refused (the cap).
        Without the bucket (not open, or no answer in time) the local check already made is
        the decision."""
        if self.cap is None or not self.cap.ready:
            self.cap_fallbacks += 1
            return
        try:
            taken = await self.cap.admit(
                user,
                key,
                client_id,
                self.max_connections,
                live=lambda: [(k, c.client_id) for k, c in self.ledger.live_keys(user)],
                gone=self.ledger.known_gone,
            )
        except CapUnavailable as exc:
            self.cap_fallbacks += 1
            log.warning("connection cap decided by this callout alone (bucket: %s)", exc)
            return
        if taken is not None:
            raise Refused(
                "limit",
                f"{taken} live connections cluster-wide (max_connections_per_user "
                f"{self.max_connections})",
            )

    async def decide(self, claims: dict[str, Any]) -> str:
        """The signed authorization response for one request."""
        req = claims["nats"]
        user_nkey = str(req.get("user_nkey", ""))
        server = req.get("server_id") or {}
        server_id = str(server.get("id", ""))
        client = req.get("client_info") or {}
        opts = req.get("connect_opts") or {}
        username = str(opts.get("user", ""))
        client_id = str(client.get("mqtt_id", ""))
        conn_key = (server_id, int(client.get("id", 0)))
        try:
            if client.get("type") != "mqtt" and client.get("kind", "Client") == "Client":
                # plain NATS clients: services only (no MQTT client id to check)
                client_id = client_id or username
            accepted = check_connect(self.tokens, username, client_id, str(opts.get("pass", "")))
            if client.get("type") != "mqtt" and not accepted.service:
                raise Refused("identity", "only services may connect without MQTT")
            if not accepted.service:
                if self.revocations.is_revoked(
                    accepted.sub, accepted.sid, accepted.iat, int(time.time())
                ):
                    raise Refused(
                        "invalid_token",
                        "token revoked (logged out, password changed or account deleted)",
                    )
                if self._waiting_for_revocations():
                    raise Refused("error", "revocations not loaded yet (revocation sync)")
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
                await self._admit_cluster_wide(accepted.sub, conn_key, client_id)
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
            self.ledger.grant(conn_key, accepted.sub, client_id)
            self._await_record(accepted.sub, client_id)
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
