"""The per-user connection cap, exact across every auth callout of the cluster.

Each callout sees every CONNECT/DISCONNECT event, but two callouts deciding two CONNECTs of one
user at the same moment cannot see each other's grant: each would admit the user's last slot.
So the grants themselves go through one atomic record per user, a key of the JetStream
key-value bucket ``plantnotify-connections`` (in the AUTH account, replicated on up to three
nodes, memory storage), the way NATS clients share state: read the key, decide, write it back
*only if its revision is still the one read* (``KV update`` = a publish with
``Nats-Expected-Last-Subject-Sequence``, checked by the stream's leader). Of two callouts that
read the same revision one write wins; the other reads again and sees the new grant.

A value is ``{"<server id>/<client number>": [MQTT client id, granted at (unix s)], ...}``:
the connections of that user that may be live. Entries leave it

* when the connection's DISCONNECT event comes (one callout of the queue group
  ``plantnotify-auth-callout-cap`` removes it);
* whenever a callout writes the key and its presence :class:`Ledger` knows the connection
  ended (its DISCONNECT was seen, its node shut down, or a CONNZ snapshot requested after the
  grant did not list it: a SIGKILLed node or callout leaves no other trace);

and connections the ledger knows live but the key lacks (granted while the bucket could not
be reached) are written back into it. So nothing needs the callout that made a grant: any of
them reconciles the key. If the bucket does not answer within ``timeout`` (its leader being
re-elected after a node died), :meth:`CapStore.admit` raises :class:`CapUnavailable` and the
callout decides from its own ledger (exact per callout, as before), so a node's death never
blocks connects.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from plantnotify.broker.engines.nats.ledger import ConnKey

BUCKET = "plantnotify-connections"
TIMEOUT_SECONDS = 1.0  # the server waits ~2 s for the callout's answer
MAX_ATTEMPTS = 50  # compare-and-set rounds per decision (only one user's racers compete)


class CapUnavailable(Exception):
    """The bucket did not answer in time: decide without it."""


@dataclass(frozen=True)
class Slot:
    client_id: str
    granted_at: float  # unix seconds


Slots = dict[ConnKey, Slot]
Gone = Callable[[ConnKey, float], bool]


def encode(slots: Slots) -> bytes:
    body = {
        f"{s}/{cid}": [slot.client_id, round(slot.granted_at, 3)]
        for (s, cid), slot in slots.items()
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode(data: bytes | None) -> Slots:
    if not data:
        return {}
    try:
        body: dict[str, Any] = json.loads(data)
        out: Slots = {}
        for name, (client_id, granted_at) in body.items():
            server_id, _, cid = name.rpartition("/")
            out[(server_id, int(cid))] = Slot(str(client_id), float(granted_at))
    except (ValueError, TypeError, AttributeError):
        return {}  # a value we cannot read: the ledger's live connections rebuild it
    return out


def settle(stored: Slots, live: Iterable[tuple[ConnKey, str]], gone: Gone, now: float) -> Slots:
    """The user's connections that may be live: ``stored`` minus those known to have ended,
    plus ``live`` (the ledger's own picture) where the key lacks them."""
    slots = {key: slot for key, slot in stored.items() if not gone(key, slot.granted_at)}
    for key, client_id in live:
        slots.setdefault(key, Slot(client_id, now))
    return slots


def others(slots: Slots, key: ConnKey, client_id: str) -> int:
    """Live connections other than ``key`` and other than ``client_id`` (a take-over of a live
    client id replaces that connection, it is not one more)."""
    return sum(1 for k, s in slots.items() if k != key and s.client_id != client_id)


class CapStore:
    def __init__(
        self,
        nc: NatsClient,
        *,
        replicas: int,
        timeout: float = TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._replicas = max(1, min(3, replicas))
        self._timeout = timeout
        self._clock = clock
        self._kv: KeyValue | None = None

    @property
    def ready(self) -> bool:
        return self._kv is not None

    async def open(self) -> None:
        """Binds the bucket, creating it if missing (every callout may race to: the same
        configuration is accepted twice)."""
        js = self._nc.jetstream(timeout=max(self._timeout, 2.0))
        try:
            self._kv = await js.key_value(BUCKET)
            return
        except BucketNotFoundError:
            pass
        try:
            self._kv = await js.create_key_value(
                bucket=BUCKET,
                history=1,
                replicas=self._replicas,
                storage=api.StorageType.MEMORY,  # connections do not outlive the cluster
                direct=False,  # reads from the leader: the revision a write is checked against
                description="plantnotify: live MQTT connections per user (auth callout cap)",
            )
        except Exception:
            self._kv = await js.key_value(BUCKET)  # another callout made it first

    async def admit(
        self,
        user: str,
        key: ConnKey,
        client_id: str,
        cap: int,
        live: Callable[[], list[tuple[ConnKey, str]]],
        gone: Gone,
    ) -> int | None:
        """Records the grant of ``key`` if ``user`` has fewer than ``cap`` other live
        connections; returns None then, else that number. Raises CapUnavailable."""
        try:
            return await asyncio.wait_for(
                self._admit(user, key, client_id, cap, live, gone), self._timeout
            )
        except CapUnavailable:
            raise
        except Exception as exc:  # timeout, no JetStream, no responders, connection lost
            raise CapUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _admit(
        self,
        user: str,
        key: ConnKey,
        client_id: str,
        cap: int,
        live: Callable[[], list[tuple[ConnKey, str]]],
        gone: Gone,
    ) -> int | None:
        kv = self._require()
        for attempt in range(MAX_ATTEMPTS):
            stored, revision = await self._read(kv, user)
            now = self._clock()
            slots = settle(stored, live(), gone, now)
            taken = others(slots, key, client_id)
            if taken >= cap:
                return taken
            slots[key] = Slot(client_id, now)
            if await self._write(kv, user, slots, revision):
                return None
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise CapUnavailable(f"{MAX_ATTEMPTS} concurrent updates of one user")

    async def release(self, user: str, key: ConnKey, gone: Gone) -> None:
        """Removes ``key`` (its DISCONNECT came), and whatever else of the user has ended."""
        kv = self._require()
        for attempt in range(MAX_ATTEMPTS):
            stored, revision = await self._read(kv, user)
            if key not in stored:
                return
            slots = {k: s for k, s in stored.items() if k != key and not gone(k, s.granted_at)}
            if await self._write(kv, user, slots, revision):
                return
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))

    async def slots(self, user: str) -> Slots:
        """What the bucket holds for ``user`` (tests, diagnostics)."""
        stored, _ = await self._read(self._require(), user)
        return stored

    # --- internals ---------------------------------------------------------------------------

    def _require(self) -> KeyValue:
        if self._kv is None:
            raise CapUnavailable("bucket not open yet")
        return self._kv

    @staticmethod
    async def _read(kv: KeyValue, user: str) -> tuple[Slots, int]:
        try:
            entry = await kv.get(user)
        except KeyNotFoundError:
            return {}, 0  # never written, or deleted (create() handles the tombstone)
        return decode(entry.value), entry.revision or 0

    @staticmethod
    async def _write(kv: KeyValue, user: str, slots: Slots, revision: int) -> bool:
        """Compare-and-set; False when another callout wrote the key since ``revision``."""
        try:
            if not revision:
                try:
                    await kv.create(user, encode(slots))
                except KeyNotFoundError:
                    # Lost to another callout's create that the stream has not applied yet:
                    # the leader refuses a write on a key while one is in flight ("wrong last
                    # sequence"), and nats-py's tombstone check inside create() then finds no
                    # key. The next round reads what that write stored.
                    return False
            elif slots:
                await kv.update(user, encode(slots), last=revision)
            else:
                await kv.delete(user, last=revision)
        except KeyWrongLastSequenceError:
            return False
        except Exception as exc:
            # delete() with a stale revision is reported as a plain API error (10071)
            if getattr(exc, "err_code", None) in (10071, 10164):
                return False
            raise
        return True
