"""The bridge's store on PostgreSQL: idempotent intake, receipt ownership, claim order, fences."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bridge.retry import NextStep, Outcome
from bridge.store import NewDecision, ReceiptResult, Store
from plantnotify.contracts.events import Receipt, Transport, utcnow
from plantnotify.db.models import TraceStep
from plantnotify.settings import Settings
from plantnotify.timeline import analysis_timeline
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


def test_each_devices_receipt_is_on_the_timeline_once_with_its_latency(
    world: World, store: Store
) -> None:
    owner = new_user()
    trace = "7c1e0f3a9b2d4e6f8a0b1c2d3e4f5a6b"
    completed = utcnow() - timedelta(seconds=2)
    event = world.event(owner, completed_at=completed, trace_id=trace)
    world.store(event, published=True)
    (ref,) = store.events([event.event_id]).values()
    store.create_decisions([NewDecision(ref, utcnow(), 1, utcnow() + GRACE)])
    at_ms = int((completed + timedelta(milliseconds=250)).timestamp() * 1000)

    def receipt(device: str | None, received_at: int | None) -> Receipt:
        return Receipt(
            event_id=event.event_id,
            received_at=received_at,
            transport=Transport.WS if received_at else None,
            client_id=device,
        )

    first = store.record_receipt(owner, receipt(f"{owner}-web-1", at_ms), utcnow())
    assert first.result is ReceiptResult.ACCEPTED and first.trace_id == trace
    assert first.latency_seconds == pytest.approx(0.25, abs=0.002)
    again = store.record_receipt(owner, receipt(f"{owner}-web-1", at_ms), utcnow())
    assert again.result is ReceiptResult.DUPLICATE and again.latency_seconds is None
    phone = store.record_receipt(owner, receipt(f"{owner}-pixel7", at_ms + 500), utcnow())
    assert phone.result is ReceiptResult.DUPLICATE  # the decision had its receipt already
    assert phone.latency_seconds == pytest.approx(0.75, abs=0.002)
    skewed = store.record_receipt(owner, receipt(f"{owner}-tab", at_ms - 10_000), utcnow())
    assert skewed.latency_seconds is None, "a clock behind the completion is not a latency"
    bare = store.record_receipt(owner, event.event_id, utcnow())
    assert bare.latency_seconds is None
    assert store.record_receipt(owner, event.event_id, utcnow()).result is ReceiptResult.DUPLICATE

    with world.db() as s:
        timeline = analysis_timeline(s, event.analysis_id)
    assert timeline is None  # the world stores events without an analysis row
    with world.db() as s:
        rows = s.execute(
            select(TraceStep.device, TraceStep.trace_id).where(TraceStep.event_id == event.event_id)
        ).all()
    assert sorted((d or "-") for d, _ in rows) == sorted(
        ["-", f"{owner}-pixel7", f"{owner}-tab", f"{owner}-web-1"]
    ), "one row per device, and one for receipts that named none"
    assert {t for _, t in rows} == {trace}
