"""The cluster-wide connection cap: the bucket's compare-and-set, and what leaves a key."""

from __future__ import annotations

import asyncio
import secrets

import nats
import pytest

from plantnotify.authcallout.capstore import (
    CapStore,
    Slot,
    decode,
    encode,
    others,
    settle,
)
from plantnotify.broker.engines.nats.keys import NatsKeys
from plantnotify.broker.engines.nats.ledger import ConnKey
from tests.support.nats import NatsHandle


def test_a_value_round_trips_and_a_bad_one_reads_as_empty() -> None:
    slots = {("NSERVER1", 7): Slot("42-a", 1.5), ("NSERVER2", 12): Slot("42", 2.0)}
    assert decode(encode(slots)) == slots
    assert decode(b"not json") == {}
    assert decode(None) == {}


def test_settle_drops_the_ended_and_adds_what_presence_knows() -> None:
    stored = {("s", 1): Slot("42-a", 10.0), ("s", 2): Slot("42-b", 11.0)}
    slots = settle(stored, [(("s", 3), "42-c")], lambda key, _t: key == ("s", 1), now=20.0)
    assert slots == {("s", 2): Slot("42-b", 11.0), ("s", 3): Slot("42-c", 20.0)}
    # a take-over of a live client id is not one more connection
    assert others(slots, ("s", 9), "42-b") == 1
    assert others(slots, ("s", 9), "42-z") == 2


def _never(_key: ConnKey, _granted: float) -> bool:
    return False


async def _stores(handle: NatsHandle) -> tuple[list[nats.NATS], list[CapStore]]:
    seed = NatsKeys.derive(handle.settings.jwt_secret).callout.seed_str
    conns = [
        await nats.connect(servers=[url], nkeys_seed_str=seed) for url in handle.cluster.client_urls
    ]
    stores = [CapStore(nc, replicas=len(conns), timeout=5.0) for nc in conns]
    for store in stores:
        await store.open()
    return conns, stores


@pytest.mark.timeout(60)
def test_callouts_on_every_node_racing_for_one_user_grant_exactly_the_cap(
    nats_cluster: NatsHandle,
) -> None:
    async def main() -> None:
        conns, stores = await _stores(nats_cluster)
        try:
            user = f"cap{secrets.token_hex(3)}"
            cap = 5
            results = await asyncio.gather(
                *(
                    stores[i % len(stores)].admit(
                        user, (f"srv{i % 3}", i), f"{user}-{i}", cap, list, _never
                    )
                    for i in range(30)
                )
            )
            assert sum(1 for r in results if r is None) == cap
            assert all(r == cap for r in results if r is not None)
            held = await stores[0].slots(user)
            assert len(held) == cap
            # one ends (its DISCONNECT): exactly one more fits, through another node
            gone_key = next(iter(held))
            await stores[1].release(user, gone_key, _never)
            again = await asyncio.gather(
                *(
                    stores[i % 3].admit(user, ("srv9", 100 + i), f"{user}-n{i}", cap, list, _never)
                    for i in range(6)
                )
            )
            assert sum(1 for r in again if r is None) == 1
            # a node died: presence says its connections ended; the next grant reconciles
            now_held = await stores[0].slots(user)
            dead_server = min(k[0] for k in now_held)
            dead = {k for k in now_held if k[0] == dead_server}

            def on_dead_node(key: ConnKey, _granted: float) -> bool:
                return key in dead

            for i in range(len(dead)):
                taken = await stores[2].admit(
                    user, ("srv8", 200 + i), f"{user}-d{i}", cap, list, on_dead_node
                )
                assert taken is None
            assert (
                await stores[2].admit(user, ("srv8", 300), f"{user}-over", cap, list, on_dead_node)
                == cap
            )
            assert not any(k in dead for k in await stores[0].slots(user))
        finally:
            for nc in conns:
                await nc.close()

    asyncio.run(main())
