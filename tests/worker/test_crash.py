"""Crash safety with ``plantnotify worker`` as a real process, killed with SIGKILL."""

from __future__ import annotations

import time
from collections.abc import Callable

from devtools.world import Subscriber, event_rows, make_analysis
from plantnotify.contracts.events import AnalysisStatus, EventType
from plantnotify.settings import Settings
from tests.support.fake_n8n import FakeN8n
from tests.support.worker import Queues, WorkerProcess, analysis_row, wait_status
from worker.faults import CRASH_AFTER_COMMIT, CRASH_EXIT_CODE

Spawn = Callable[..., WorkerProcess]


def test_killed_after_the_commit_before_the_publish_the_event_still_arrives(
    worker_settings: Settings,
    queues: Queues,
    spawn_worker: Spawn,
    subscriber: Callable[[str], Subscriber],
    fake_n8n: FakeN8n,
) -> None:
    aid, uid = make_analysis(worker_settings)
    device = subscriber(uid)
    doomed = spawn_worker({CRASH_AFTER_COMMIT: "1"})
    doomed.wait_log("worker ready")
    queues.publish_job(aid, uid)
    assert doomed.wait(20) == CRASH_EXIT_CODE

    # The result is committed, its event is in the outbox but never went out.
    assert analysis_row(worker_settings, aid).status == AnalysisStatus.COMPLETED
    [completed] = [r for r in event_rows(worker_settings, aid) if r.type == EventType.COMPLETED]
    assert completed.published_at is None
    assert not any(e["event"] == EventType.COMPLETED for e in device.events(aid))
    assert queues.depth() == 1  # never acked: RabbitMQ holds the job again

    spawn_worker().wait_log("worker ready")
    got = device.wait_event(aid, EventType.COMPLETED, timeout=15)
    assert got["eventId"] == completed.id
    deadline = time.monotonic() + 5
    while queues.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queues.depth() == 0  # the redelivery was acked without a second analysis
    assert len(fake_n8n.calls_for(aid)) == 1
    assert [r.type for r in event_rows(worker_settings, aid)].count(EventType.COMPLETED) == 1


def test_killed_in_the_middle_of_an_n8n_call_the_job_is_redelivered_and_completes(
    worker_settings: Settings,
    queues: Queues,
    spawn_worker: Spawn,
    subscriber: Callable[[str], Subscriber],
    fake_n8n: FakeN8n,
) -> None:
    aid, uid = make_analysis(worker_settings)
    fake_n8n.plan(aid, "slow:30")
    device = subscriber(uid)
    # A long lease: taking over must not wait for it (the dead worker's presence lock is gone).
    victim = spawn_worker(worker_lease_seconds=60)
    victim.wait_log("worker ready")
    queues.publish_job(aid, uid)
    fake_n8n.wait_call(aid)
    victim.kill()
    assert analysis_row(worker_settings, aid).lease_owner is not None  # left behind

    started = time.monotonic()
    spawn_worker(worker_lease_seconds=60).wait_log("worker ready")
    row = wait_status(worker_settings, aid, timeout=15)
    assert time.monotonic() - started < 12
    assert row.status == AnalysisStatus.COMPLETED and row.attempts == 2
    assert len(fake_n8n.calls_for(aid)) == 2
    completed = device.wait_event(aid, EventType.COMPLETED)
    assert completed["overallHealthScore"] == 72
    stages = [e.payload.get("stage") for e in event_rows(worker_settings, aid)]
    assert stages == ["started", "analyzing", None]  # no stage announced twice


def test_sigterm_stops_the_worker_cleanly(
    worker_settings: Settings, queues: Queues, spawn_worker: Spawn
) -> None:
    worker = spawn_worker()
    worker.wait_log("worker ready")
    started = time.monotonic()
    assert worker.terminate() == 0
    assert time.monotonic() - started < 5
    assert "worker stopped" in worker.log()
