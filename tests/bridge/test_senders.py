"""The senders against PostgreSQL and the FCM emulator: one attempt, one count in the metrics."""

from __future__ import annotations

import threading
from datetime import timedelta

from bridge import metrics
from bridge.credentials import FcmTarget, ephemeral_service_account
from bridge.fcm import FcmSender
from bridge.retry import RetryPolicy
from bridge.senders import Senders
from bridge.store import NewDecision, Store
from devtools.fcm_emulator import FcmEmulator
from plantnotify.contracts.events import utcnow
from tests.bridge.conftest import World, new_user
from tests.support.net import wait_for

GRACE = timedelta(seconds=10)


def _senders(
    store: Store,
    emulator: FcmEmulator,
    concurrency: int = 1,
    stop: threading.Event | None = None,
) -> Senders:
    sa = ephemeral_service_account(emulator.token_uri, "senders-tests")
    sender = FcmSender(FcmTarget(sa, emulator.url, ephemeral=True), timeout=5)
    return Senders(
        store,
        sender,
        RetryPolicy(),
        lease=timedelta(seconds=30),
        concurrency=concurrency,
        ttl_seconds=3600,
        web_base_url=None,
        stop=stop,
    )


def _count(counter: object, label: str) -> float:
    return float(counter.labels(label)._value.get())  # type: ignore[attr-defined]


def test_an_attempt_reported_after_losing_its_lease_is_counted_once(
    world: World, fcm_emulator: FcmEmulator
) -> None:
    """Bridge A's lease runs out mid-send; bridge B takes the delivery over, counts A's attempt
    as ``unknown`` and sends it itself. A's late report is stored (the audit trail keeps it) but
    must not be counted again: two attempts, two counts, one final delivery."""
    user = new_user()
    token = world.add_device(user)
    event = world.event(user)
    world.store(event, published=True)
    a, b = Store(world.db, "bridge-a"), Store(world.db, "bridge-b")
    (ref,) = a.events([event.event_id]).values()
    a.create_decisions([NewDecision(ref, utcnow(), 0, utcnow())])
    a.process_due(utcnow(), GRACE, lambda u: 0)
    (mine,) = [
        c
        for c in a.claim_deliveries(utcnow(), timedelta(seconds=-1), 50)
        if c.event_id == event.event_id
    ]
    (theirs,) = [
        c
        for c in b.claim_deliveries(utcnow(), timedelta(seconds=30), 50)
        if c.event_id == event.event_id
    ]
    assert theirs.lost_previous

    before = {k: _count(metrics.PUSHES, k) for k in ("sent", "unknown")}
    delivered_before = _count(metrics.DELIVERIES, "sent")
    _senders(a, fcm_emulator).attempt(mine)  # the late report of the lost lease
    _senders(b, fcm_emulator).attempt(theirs)

    assert len(fcm_emulator.deliveries(token)) == 2  # both sends really happened
    (row,) = world.deliveries(event.event_id)
    assert [x.outcome for x in world.attempts(row.id)] == ["unknown", "sent", "sent"]
    assert _count(metrics.PUSHES, "unknown") - before["unknown"] == 1
    assert _count(metrics.PUSHES, "sent") - before["sent"] == 1
    assert _count(metrics.DELIVERIES, "sent") - delivered_before == 1


def test_two_pipelines_sending_at_once_push_each_event_and_device_once(
    world: World, fcm_emulator: FcmEmulator
) -> None:
    """Two bridges' senders (claimer, 4 sender threads and a batching recorder each) drain the
    same deliveries at once: every (event, device) reaches FCM exactly once, and each delivery
    has exactly one attempt, recorded as sent, by whichever bridge leased it."""
    users = [new_user() for _ in range(15)]
    tokens = {u: [world.add_device(u), world.add_device(u, platform="ios")] for u in users}
    events = []
    for u in users:
        for _ in range(3):
            e = world.event(u)
            world.store(e, published=True)
            events.append(e)
    a, b = Store(world.db, "bridge-a"), Store(world.db, "bridge-b")
    refs = a.events([e.event_id for e in events])
    a.create_decisions([NewDecision(r, utcnow(), 0, utcnow()) for r in refs.values()])
    while a.process_due(utcnow(), GRACE, lambda u: 0):
        pass
    stop = threading.Event()
    pipelines = [_senders(st, fcm_emulator, concurrency=4, stop=stop) for st in (a, b)]
    for p in pipelines:
        p.start()
        p.wake()

    def all_finished() -> bool:
        return all(
            len(rows) == 2 and all(r.finished_at is not None for r in rows)
            for rows in (world.deliveries(e.event_id) for e in events)
        )

    try:
        wait_for(all_finished, timeout=60, what="every delivery finished")
    finally:
        stop.set()
        for p in pipelines:
            p.join(10)

    by_bridge = {"bridge-a": 0, "bridge-b": 0}
    for e in events:
        rows = world.deliveries(e.event_id)
        assert sorted(r.device_token for r in rows) == sorted(tokens[e.user_id])
        for r in rows:
            assert (r.status, r.attempts) == ("sent", 1)
            (att,) = world.attempts(r.id)
            assert att.outcome == "sent"
            by_bridge[att.bridge] += 1
    for u in users:
        for token in tokens[u]:
            got = sorted(d["message"]["data"]["eventId"] for d in fcm_emulator.deliveries(token))
            assert got == sorted(e.event_id for e in events if e.user_id == u)
    assert sum(by_bridge.values()) == len(events) * 2
