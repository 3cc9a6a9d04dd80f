"""The bridge's store on PostgreSQL: idempotent intake, receipt ownership, claim order, fences."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bridge.retry import NextStep, Outcome
from bridge.store import NewDecision, ReceiptResult, Store
from plantnotify.contracts.events import utcnow
from plantnotify.settings import Settings
from tests.bridge.conftest import World, new_user

GRACE = timedelta(seconds=10)


@pytest.fixture
def store(world: World) -> Store:
    return Store(world.db, "store-test")


def _taken_in(world: World, store: Store, user: str, age_s: float = 0.0, live: int | None = 0):
    event = world.event(user)
    world.store(event, published=True)
    (ref,) = store.events([event.event_id]).values()
    published = utcnow() - timedelta(seconds=age_s)
    return event, NewDecision(ref, published, live, published)


def test_intake_is_idempotent_across_paths_and_bridges(world: World, store: Store) -> None:
    user = new_user()
    event, row = _taken_in(world, store, user)
    other = Store(world.db, "other-bridge")
    assert store.create_decisions([row]) == {event.event_id}
    assert other.create_decisions([row]) == set()
    unseen = store.unseen_published(utcnow() - timedelta(hours=1), limit=10_000)
    assert event.event_id not in {r.event_id for r in unseen}


def test_receipts_only_from_the_owner_and_once(world: World, store: Store) -> None:
    owner, stranger = new_user(), new_user()
    event, row = _taken_in(world, store, owner, live=1)
    store.create_decisions([row])
    assert store.record_receipt(stranger, event.event_id, utcnow()).result is ReceiptResult.FOREIGN
    assert store.record_receipt(owner, "no-such-event", utcnow()).result is ReceiptResult.FOREIGN
    assert world.receipt(event.event_id) is None
    assert store.record_receipt(owner, event.event_id, utcnow()).result is ReceiptResult.ACCEPTED
    assert store.record_receipt(owner, event.event_id, utcnow()).result is ReceiptResult.DUPLICATE


def test_due_decisions_are_settled_newest_first(world: World, store: Store) -> None:
    user = new_user()
    world.add_device(user)
    rows = [_taken_in(world, store, user, age_s=age) for age in (300, 5, 60)]
    store.create_decisions([r for _, r in rows])
    mine = {e.event_id for e, _ in rows}
    settled: list[str] = []
    while len(settled) < 3:
        out = store.process_due(utcnow(), GRACE, lambda u: 0, limit=1)
        settled += [f.event_id for f in out if f.event_id in mine]
        assert out, "nothing was due"
    by_age = {e.event_id: age for (e, _), age in zip(rows, (300, 5, 60), strict=True)}
    assert [by_age[e] for e in settled] == [5, 60, 300]


def test_a_report_after_losing_the_lease_does_not_overwrite(
    world: World, store: Store, settings: Settings
) -> None:
    user = new_user()
    world.add_device(user)
    event, row = _taken_in(world, store, user)
    store.create_decisions([row])
    store.process_due(utcnow(), GRACE, lambda u: 0)
    now = utcnow()
    (mine,) = [
        c
        for c in store.claim_deliveries(now, timedelta(seconds=-1), 50)
        if c.event_id == event.event_id
    ]
    other = Store(world.db, "other")
    (theirs,) = [
        c
        for c in other.claim_deliveries(utcnow(), timedelta(seconds=30), 50)
        if c.event_id == event.event_id
    ]
    assert theirs.lost_previous and theirs.attempt == mine.attempt + 1
    assert not store.record_attempt(
        mine, outcome=Outcome.SENT, step=NextStep(None, "sent"), started=now, finished=utcnow()
    )
    assert other.record_attempt(
        theirs, outcome=Outcome.SENT, step=NextStep(None, "sent"), started=now, finished=utcnow()
    )
    (row_,) = world.deliveries(event.event_id)
    assert (row_.status, row_.attempts) == ("sent", 2)
    assert [a.outcome for a in world.attempts(row_.id)] == ["unknown", "sent", "sent"]
