"""Leases and outbox rows against the real PostgreSQL: who may run an analysis, and that a
result and its event are stored together exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, text, update

from devtools.world import event_rows, leaf_png, make_analysis, sessions_for
from plantnotify.contracts.events import AnalysisStatus, EventType
from plantnotify.contracts.queues import DELIVERY_LIMIT
from plantnotify.db.models import Analysis, AnalysisImage
from plantnotify.settings import Settings
from tests.support.worker import analysis_row
from worker.presence import Presence, new_owner_id, owner_key
from worker.store import ClaimState, JobStore, Outcome


@pytest.fixture
def db_settings(base_settings: Settings) -> Settings:
    return base_settings


class Owner:
    """A worker identity: a JobStore plus the presence lock that says it is alive."""

    def __init__(self, settings: Settings, lease: float = 30.0) -> None:
        self.id = new_owner_id()
        self.settings = settings
        self.presence = Presence(settings.database_url, self.id)
        assert self.presence.ensure()
        self.store = JobStore(
            sessions_for(settings),
            owner=self.id,
            lease_seconds=lease,
            event_expiry_seconds=3600,
            image_url=lambda aid: f"/api/v1/plantanalyses/{aid}/image",
            max_attempts=DELIVERY_LIMIT,
        )

    def die(self) -> None:
        """Close the presence connection, and return once PostgreSQL has ended its session
        (a backend exits a moment after its client hangs up, and frees its locks then)."""
        self.presence.close()
        key = owner_key(self.id)
        deadline = time.monotonic() + 10
        with sessions_for(self.settings)() as s:
            while time.monotonic() < deadline:
                held = s.scalar(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND objid = CAST(:k AS oid) AND objsubid = 2"
                    ),
                    {"k": key},
                )
                s.rollback()
                if not held:
                    return
                time.sleep(0.02)
        raise AssertionError(f"the presence lock of {self.id} outlived its connection")


@pytest.fixture
def owners(db_settings: Settings) -> Iterator[list[Owner]]:
    made: list[Owner] = []
    yield made
    for owner in made:
        owner.die()


def test_owner_ids_carry_their_presence_key() -> None:
    owner = new_owner_id()
    assert owner_key(owner) is not None
    assert owner_key("some-other-shape") is None


def test_a_claim_takes_the_lease_reads_the_image_and_records_the_first_two_stages(
    db_settings: Settings, owners: list[Owner]
) -> None:
    owners.append(a := Owner(db_settings))
    image = leaf_png(3)
    aid, uid = make_analysis(db_settings, image=image)
    claim = a.store.claim(aid, uid)
    assert claim.state is ClaimState.CLAIMED and claim.work is not None
    assert claim.work.attempt == 1
    assert claim.work.preloaded and claim.work.image == image
    assert [(e.stage, e.progress) for e in claim.events] == [("started", 10), ("analyzing", 50)]
    row = analysis_row(db_settings, aid)
    assert row.lease_owner == a.id and row.attempts == 1
    started, analyzing = event_rows(db_settings, aid)  # in seq order: the outbox's order
    assert started.payload["stage"] == "started" and started.payload["progress"] == 10
    assert analyzing.payload["stage"] == "analyzing" and analyzing.payload["progress"] == 50
    assert [e.event_id for e in claim.events] == [started.id, analyzing.id]
    assert started.published_at is None  # the outbox publishes it


def test_a_claim_without_an_image_records_only_the_started_stage(
    db_settings: Settings, owners: list[Owner]
) -> None:
    owners.append(a := Owner(db_settings))
    aid, uid = make_analysis(db_settings)
    with sessions_for(db_settings).begin() as s:
        s.execute(delete(AnalysisImage).where(AnalysisImage.analysis_id == aid))
    claim = a.store.claim(aid, uid)
    assert claim.state is ClaimState.CLAIMED and claim.work is not None
    assert claim.work.preloaded and claim.work.image is None
    assert [e.payload["stage"] for e in event_rows(db_settings, aid)] == ["started"]


def test_a_live_lease_is_not_started_twice_but_a_dead_owner_is_taken_over_at_once(
    db_settings: Settings, owners: list[Owner]
) -> None:
    owners.extend([a := Owner(db_settings), b := Owner(db_settings)])
    aid, uid = make_analysis(db_settings)
    assert a.store.claim(aid, uid).state is ClaimState.CLAIMED
    held = b.store.claim(aid, uid)
    assert held.state is ClaimState.HELD and held.holder == a.id
    a.die()  # SIGKILL: PostgreSQL drops its session and the presence lock with it
    took = b.store.claim(aid, uid)
    assert took.state is ClaimState.CLAIMED and took.work is not None
    assert took.work.attempt == 2
    # The stage events of the first attempt are not repeated.
    stages = [e.payload.get("stage") for e in event_rows(db_settings, aid)]
    assert stages == ["started", "analyzing"]


def test_an_expired_lease_of_a_live_but_stuck_worker_is_taken_over(
    db_settings: Settings, owners: list[Owner]
) -> None:
    owners.extend([a := Owner(db_settings, lease=0.2), b := Owner(db_settings)])
    aid, uid = make_analysis(db_settings)
    assert a.store.claim(aid, uid).state is ClaimState.CLAIMED
    assert b.store.claim(aid, uid).state is ClaimState.HELD
    time.sleep(0.3)  # a is alive (presence lock held) but stopped renewing
    assert b.store.claim(aid, uid).state is ClaimState.CLAIMED
    assert analysis_row(db_settings, aid).lease_owner == b.id


def test_a_result_is_stored_once_with_its_event_and_a_stale_owner_changes_nothing(
    db_settings: Settings, owners: list[Owner]
) -> None:
    owners.extend([a := Owner(db_settings, lease=0.2), b := Owner(db_settings)])
    aid, uid = make_analysis(db_settings)
    work_a = a.store.claim(aid, uid).work
    assert work_a is not None
    time.sleep(0.3)
    work_b = b.store.claim(aid, uid).work
    assert work_b is not None
    completed = b.store.finish(
        work_b,
        Outcome(
            completed=True,
            result={"cropType": "tomato", "overallHealthScore": 81},
            crop_type="tomato",
            primary_concern="Leaf mold",
            health=81,
        ),
    )
    assert completed is not None and completed.event is EventType.COMPLETED
    assert a.store.finish(work_a, Outcome(completed=False, error_message="late")) is None
    row = analysis_row(db_settings, aid)
    assert (row.status, row.overall_health_score, row.primary_concern, row.error_message) == (
        AnalysisStatus.COMPLETED,
        81,
        "Leaf mold",
        None,
    )
    assert row.lease_owner is None and row.completed_at is not None
    terminal = [e for e in event_rows(db_settings, aid) if e.type != EventType.PROGRESS]
    assert len(terminal) == 1 and terminal[0].id == completed.event_id
    assert terminal[0].payload["imageUrl"] == f"/api/v1/plantanalyses/{aid}/image"
    assert terminal[0].payload["deepLink"] == f"app://analysis/{aid}"
    # A redelivery afterwards finds it finished.
    assert b.store.claim(aid, uid).state is ClaimState.FINISHED


def test_progress_stages_are_recorded_once_and_only_by_the_lease_holder(
    db_settings: Settings, owners: list[Owner]
) -> None:
    owners.extend([a := Owner(db_settings), b := Owner(db_settings)])
    aid, uid = make_analysis(db_settings)
    work = a.store.claim(aid, uid).work
    assert work is not None
    assert a.store.progress(work, 50, "analyzing") is None  # the claim recorded it
    assert a.store.progress(work, 90, "saving") is not None
    assert a.store.progress(work, 90, "saving") is None
    assert b.store.progress(work, 95, "checking") is None  # not b's lease
    stages = [e.payload["stage"] for e in event_rows(db_settings, aid)]
    assert stages == ["started", "analyzing", "saving"]


def test_unknown_and_foreign_jobs_are_told_apart(
    db_settings: Settings, owners: list[Owner]
) -> None:
    owners.append(a := Owner(db_settings))
    aid, _ = make_analysis(db_settings)
    assert a.store.claim("no-such-analysis", "u1").state is ClaimState.UNKNOWN
    assert a.store.claim(aid, "someone-else").state is ClaimState.MISMATCH
    assert event_rows(db_settings, aid) == []


def test_an_analysis_that_keeps_crashing_its_workers_ends_failed(
    db_settings: Settings, owners: list[Owner]
) -> None:
    aid, uid = make_analysis(db_settings)
    with sessions_for(db_settings).begin() as s:
        s.execute(update(Analysis).where(Analysis.id == aid).values(attempts=DELIVERY_LIMIT))
    owners.append(a := Owner(db_settings))
    claim = a.store.claim(aid, uid)
    assert claim.state is ClaimState.EXHAUSTED
    row = analysis_row(db_settings, aid)
    assert row.status == AnalysisStatus.FAILED
    assert row.error_message and "interrupted 5 times" in row.error_message
    assert [e.type for e in event_rows(db_settings, aid)] == [EventType.FAILED]


def test_a_released_lease_is_free_and_the_hand_back_is_not_counted(
    db_settings: Settings, owners: list[Owner]
) -> None:
    owners.extend([a := Owner(db_settings), b := Owner(db_settings)])
    aid, uid = make_analysis(db_settings)
    assert a.store.claim(aid, uid).state is ClaimState.CLAIMED
    assert a.store.release([aid]) == 1
    assert analysis_row(db_settings, aid).attempts == 0
    claim = b.store.claim(aid, uid)
    assert claim.state is ClaimState.CLAIMED and claim.work and claim.work.attempt == 1
