"""The worker in-process against real RabbitMQ, PostgreSQL and our Mosquitto; N8N faked over
HTTP. Subscribers use *user* tokens, like a phone."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from devtools.world import Subscriber, event_rows, make_analysis
from plantnotify.contracts.events import AnalysisStatus, EventType, parse_event
from plantnotify.settings import Settings
from tests.support.fake_n8n import FakeN8n
from tests.support.worker import Queues, analysis_row, wait_published, wait_status

StartWorker = Callable[..., Any]
OpenSubscriber = Callable[[str], Subscriber]


def test_a_job_flows_to_the_users_devices_as_progress_then_completed(
    worker_settings: Settings,
    queues: Queues,
    start_worker: StartWorker,
    subscriber: OpenSubscriber,
    fake_n8n: FakeN8n,
) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    published_before = sample("plantnotify_outbox_events_published_total")
    calls_before = sample("plantnotify_n8n_request_seconds_count")
    completed_before = sample("plantnotify_worker_jobs_total", outcome="completed")
    start_worker()
    aid, uid = make_analysis(worker_settings, crop_type="tomato")
    live = subscriber(uid)
    queues.publish_job(aid, uid)

    completed = live.wait_event(aid, EventType.COMPLETED)
    events = live.events(aid)
    kinds = [(e["event"], e.get("stage")) for e in events]
    assert kinds == [
        (EventType.PROGRESS, "started"),
        (EventType.PROGRESS, "analyzing"),
        (EventType.COMPLETED, None),
    ]
    assert [e["progress"] for e in events[:2]] == [10, 50]
    # Every contract field of AnalysisCompleted, with the values N8N gave.
    assert set(completed) == {
        "event",
        "eventId",
        "analysisId",
        "userId",
        "status",
        "completedAt",
        "cropType",
        "primaryConcern",
        "overallHealthScore",
        "imageUrl",
        "deepLink",
    }
    assert completed["status"] == "Completed" and completed["userId"] == uid
    assert completed["cropType"] == "tomato"
    assert completed["primaryConcern"] == "Early blight (Alternaria solani)"
    assert completed["overallHealthScore"] == 72
    assert completed["imageUrl"].endswith(f"/api/v1/plantanalyses/{aid}/image")
    assert completed["deepLink"] == f"app://analysis/{aid}"
    datetime.fromisoformat(completed["completedAt"])
    assert len({e["eventId"] for e in events}) == 3
    assert all(len(json.dumps(e)) < 1024 for e in events)
    assert all(m.retain is False and m.qos == 1 for m in live.messages)  # live delivery
    assert all(
        m.expiry and 0 < m.expiry <= worker_settings.event_expiry_seconds for m in live.messages
    )

    # What N8N got is the contract request; what was stored is the whole object.
    [call] = fake_n8n.calls_for(aid)
    assert call.body["userId"] == uid and call.body["mimeType"] == "image/png"
    row = analysis_row(worker_settings, aid)
    assert row.status == AnalysisStatus.COMPLETED and row.result == fake_n8n.result
    # Published only after PUBACK; the database holds exactly what went out.
    stored = wait_published(worker_settings, aid)
    assert [r.id for r in stored] == [e["eventId"] for e in events]

    # A device that connects later gets the retained state: the Completed event.
    later = subscriber(uid)
    retained = later.wait_event(aid, EventType.COMPLETED, timeout=5)
    assert retained["eventId"] == completed["eventId"]
    assert later.messages[-1].retain is True
    assert queues.depth() == 0
    # The metrics saw it too.
    assert sample("plantnotify_outbox_events_published_total") >= published_before + 3
    assert sample("plantnotify_n8n_request_seconds_count") == calls_before + 1
    assert sample("plantnotify_worker_jobs_total", outcome="completed") == completed_before + 1
    assert sample("plantnotify_worker_jobs_in_flight") == 0


def test_n8n_misbehaving_ends_in_the_right_outcome(
    worker_settings: Settings,
    queues: Queues,
    start_worker: StartWorker,
    subscriber: OpenSubscriber,
    fake_n8n: FakeN8n,
) -> None:
    start_worker()
    uid = "u-n8n-modes"
    live = subscriber(uid)
    plans = {
        "500": ["500", "500", "500"],
        "503-then-200": ["503"],
        "non-json": ["not_json"],
        "array": ["array"],
        "hang": ["hang", "hang", "hang"],
    }
    ids = {}
    for name, modes in plans.items():
        aid, _ = make_analysis(worker_settings, uid)
        fake_n8n.plan(aid, *modes)
        ids[name] = aid
    for aid in ids.values():
        queues.publish_job(aid, uid)

    outcomes = {name: wait_status(worker_settings, aid, timeout=20) for name, aid in ids.items()}
    assert outcomes["503-then-200"].status == AnalysisStatus.COMPLETED
    expected_failures = {
        "500": ("HTTP 500", 3),
        "non-json": ("not JSON", 1),
        "array": ("JSON array", 1),
        "hang": ("did not answer within 1 s", 3),
    }
    for name, (words, calls) in expected_failures.items():
        row = outcomes[name]
        assert row.status == AnalysisStatus.FAILED, name
        assert row.error_message and words in row.error_message, (name, row.error_message)
        assert "Traceback" not in row.error_message and fake_n8n.url not in row.error_message
        assert len(fake_n8n.calls_for(ids[name])) == calls, name
        failed = live.wait_event(ids[name], EventType.FAILED)
        assert failed["errorMessage"] == row.error_message
        assert set(failed) == {
            "event",
            "eventId",
            "analysisId",
            "userId",
            "status",
            "failedAt",
            "errorMessage",
        }
    assert len(fake_n8n.calls_for(ids["503-then-200"])) == 2
    live.wait_event(ids["503-then-200"], EventType.COMPLETED)


def test_undecodable_and_unknown_jobs_go_to_the_dead_letter_queue_with_a_reason(
    worker_settings: Settings,
    queues: Queues,
    start_worker: StartWorker,
    caplog: pytest.LogCaptureFixture,
    fake_n8n: FakeN8n,
) -> None:
    caplog.set_level(logging.ERROR, logger="plantnotify.worker")
    start_worker()
    aid, uid = make_analysis(worker_settings)
    poison = [
        b"this is not json",
        b'{"analysisId": "x"}',
        b"[1, 2, 3]",
        json.dumps({"analysisId": "no-such-analysis", "userId": uid}).encode(),
        json.dumps({"analysisId": aid, "userId": "not-the-owner"}).encode(),
    ]
    for body in poison:
        queues.publish_raw(body)

    deadline = time.monotonic() + 10
    dead: list[bytes] = []
    while len(dead) < len(poison) and time.monotonic() < deadline:
        dead += queues.drain_dead_letters()
        time.sleep(0.1)
    assert sorted(dead) == sorted(poison)
    assert queues.depth() == 0
    text = caplog.text
    assert "not an AnalysisJob: userId: Field required" in text
    assert "no such analysis" in text
    assert "does not own the analysis" in text
    assert fake_n8n.calls == []
    # The analysis named with the wrong owner was not touched.
    assert analysis_row(worker_settings, aid).status == AnalysisStatus.PROCESSING
    assert event_rows(worker_settings, aid) == []


def test_duplicate_deliveries_give_one_result_and_one_event_per_change(
    worker_settings: Settings,
    queues: Queues,
    start_worker: StartWorker,
    subscriber: OpenSubscriber,
    fake_n8n: FakeN8n,
) -> None:
    start_worker()
    aid, uid = make_analysis(worker_settings)
    fake_n8n.plan(aid, "slow:0.5")
    live = subscriber(uid)
    for _ in range(3):  # e.g. the API retried a publish whose confirm it did not see
        queues.publish_job(aid, uid)
    live.wait_event(aid, EventType.COMPLETED)
    queues.publish_job(aid, uid)  # and a late redelivery after it finished
    deadline = time.monotonic() + 5
    while queues.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)

    assert queues.depth() == 0
    assert len(fake_n8n.calls_for(aid)) == 1
    rows = event_rows(worker_settings, aid)
    assert [r.type for r in rows].count(EventType.COMPLETED) == 1
    assert [r.payload.get("stage") for r in rows if r.type == EventType.PROGRESS] == [
        "started",
        "analyzing",
    ]
    assert len({r.id for r in rows}) == len(rows)
    assert analysis_row(worker_settings, aid).attempts == 1
    assert [e["eventId"] for e in live.events(aid)] == [r.id for r in rows]


def test_a_job_running_on_one_worker_is_not_started_again_by_another(
    worker_settings: Settings,
    queues: Queues,
    start_worker: StartWorker,
    fake_n8n: FakeN8n,
) -> None:
    first = start_worker(n8n_timeout_seconds=5)
    aid, uid = make_analysis(worker_settings)
    fake_n8n.plan(aid, "slow:1.5")
    queues.publish_job(aid, uid)
    fake_n8n.wait_call(aid)
    second = start_worker(n8n_timeout_seconds=5)
    queues.publish_job(aid, uid)  # the duplicate can only go to the second worker's free slots
    row = wait_status(worker_settings, aid, timeout=10)
    assert row.status == AnalysisStatus.COMPLETED
    deadline = time.monotonic() + 5
    while queues.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queues.depth() == 0
    assert len(fake_n8n.calls_for(aid)) == 1
    assert first.processor.running() == [] and second.processor.running() == []


def first_seen(events: list[dict[str, Any]]) -> list[str]:
    """Event ids in arrival order, duplicates dropped as a client does."""
    return list(dict.fromkeys(e["eventId"] for e in events))


def test_outbox_partitions_shared_order_kept_and_failover_between_publishers(
    worker_settings: Settings,
    start_worker: StartWorker,
    subscriber: OpenSubscriber,
) -> None:
    from devtools.world import sessions_for
    from plantnotify.contracts.events import AnalysisProgress
    from worker.outbox import OUTBOX_PARTITIONS
    from worker.store import add_event

    first = start_worker()
    assert first.outbox.wait_partitions(OUTBOX_PARTITIONS, 10)
    second = start_worker()
    # The second process takes its fair share within about a second; no partition has two
    # leaders.
    half = OUTBOX_PARTITIONS // 2
    assert second.outbox.wait_partitions(half, 10)
    assert first.outbox.wait_partitions(half, 10)
    assert not set(first.outbox.partitions) & set(second.outbox.partitions)
    uid = "u-outbox-partitions"
    aids = [make_analysis(worker_settings, uid)[0] for _ in range(8)]
    live = subscriber(uid)

    def commit(n: int, start: int) -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {aid: [] for aid in aids}
        with sessions_for(worker_settings).begin() as s:
            for i in range(start, start + n):
                for aid in aids:
                    event = AnalysisProgress(
                        analysis_id=aid, user_id=uid, progress=i % 100, stage=f"s{i}"
                    )
                    add_event(s, event, 3600)
                    ids[aid].append(event.event_id)
        return ids

    # More than one batch (500), committed by "another process" (NOTIFY), spread over the
    # partitions of both publishers.
    sent = commit(100, 0)
    live.wait_for(lambda evs: len({e["eventId"] for e in evs}) >= 800, timeout=15)
    for aid in aids:
        assert first_seen(live.events(aid)) == sent[aid]

    first.stop()  # a leader goes away; the other takes its partitions over within a second
    assert second.outbox.wait_partitions(OUTBOX_PARTITIONS, 10)
    more = commit(5, 100)
    live.wait_for(lambda evs: len({e["eventId"] for e in evs}) >= 840, timeout=10)
    # A batch published but not yet marked when the leader stops is published again by the
    # new leader: QoS-1 style duplicates, which clients drop on eventId. Order must hold.
    for aid in aids:
        assert first_seen(live.events(aid)) == sent[aid] + more[aid]
    later = subscriber(uid)
    for aid in aids:
        assert later.wait_event(aid, EventType.PROGRESS, timeout=5)["eventId"] == more[aid][-1]


def test_a_notify_read_during_the_publishers_own_queries_does_not_wait_for_the_sweep(
    worker_settings: Settings,
    start_worker: StartWorker,
    subscriber: OpenSubscriber,
) -> None:
    """psycopg2 reads NOTIFYs off the socket while it runs any query. An event committed after
    the publisher's last SELECT, whose NOTIFY was read by one of the publisher's own queries,
    must go out at once, not at the next sweep (found by plantnotify bench: p99.9 of 5 s)."""
    from devtools.world import sessions_for
    from plantnotify.contracts.events import AnalysisProgress
    from worker.store import add_event

    worker = start_worker(outbox_sweep_seconds=60)
    assert worker.outbox.wait_leader(10)
    aid, uid = make_analysis(worker_settings)
    live = subscriber(uid)
    outbox = worker.outbox
    step = outbox._step
    injected: list[str] = []

    def step_then_commit_in_the_window() -> bool:
        done = step()
        if not injected:
            # Exactly the race: committed after this step's last SELECT, and its NOTIFY read
            # by a query of the publisher's own connection before it goes back to select().
            with sessions_for(worker_settings).begin() as s:
                event = AnalysisProgress(analysis_id=aid, user_id=uid, progress=50, stage="x")
                add_event(s, event, 3600)
            injected.append(event.event_id)
            assert outbox._conn is not None
            with outbox._conn.cursor() as cur:
                cur.execute("SELECT 1")
        return done

    outbox._step = step_then_commit_in_the_window  # type: ignore[method-assign]
    outbox.wake()  # run one step now
    live.wait_for(lambda evs: any(e["eventId"] in injected for e in evs), timeout=5)


def test_after_a_broker_crash_retained_state_matches_the_database_again(
    worker_settings: Settings,
    queues: Queues,
    start_worker: StartWorker,
    broker_factory: Any,
    fake_n8n: FakeN8n,
) -> None:
    broker = broker_factory(base=worker_settings)
    settings = broker.settings
    start_worker(mqtt_port=settings.mqtt_port, mqtt_ws_port=settings.mqtt_ws_port)
    uid = "u-broker-crash"
    ids = []
    for _ in range(3):
        aid, _ = make_analysis(worker_settings, uid)
        queues.publish_job(aid, uid)
        ids.append(aid)
    fake_n8n.plan(ids[2], "array")  # one ends Failed
    for aid in ids:
        wait_published(worker_settings, aid)

    broker.restart(kill=True)  # SIGKILL: Mosquitto saved nothing since its last autosave
    started = time.monotonic()
    with Subscriber(settings, uid) as device:
        device.wait_for(
            lambda evs: (
                {e["analysisId"] for e in evs if e["event"] != EventType.PROGRESS} >= set(ids)
            ),
            timeout=10,
        )
        elapsed = time.monotonic() - started
        time.sleep(0.3)
        latest = {e["analysisId"]: e for e in device.events()}
    for aid in ids:
        final = event_rows(worker_settings, aid)[-1]
        assert latest[aid]["eventId"] == final.id
        assert parse_event(latest[aid]).event == final.type
    assert elapsed < 10


def test_a_graceful_stop_hands_a_running_job_back_for_another_worker(
    worker_settings: Settings,
    queues: Queues,
    start_worker: StartWorker,
    fake_n8n: FakeN8n,
) -> None:
    first = start_worker()
    aid, uid = make_analysis(worker_settings)
    fake_n8n.plan(aid, "slow:30")  # far longer than the 1 s shutdown grace
    queues.publish_job(aid, uid)
    fake_n8n.wait_call(aid)
    stopper = threading.Thread(target=first.stop)
    started = time.monotonic()
    stopper.start()
    stopper.join(10)
    assert time.monotonic() - started < 5
    assert analysis_row(worker_settings, aid).lease_owner is None  # released
    start_worker()
    row = wait_status(worker_settings, aid, timeout=10)
    assert row.status == AnalysisStatus.COMPLETED
    assert len(fake_n8n.calls_for(aid)) == 2
    assert row.attempts == 1  # the hand-back was not counted as a crash


def test_a_lost_rabbitmq_connection_is_reopened_and_the_running_job_not_run_twice(
    worker_settings: Settings,
    queues: Queues,
    start_worker: StartWorker,
    fake_n8n: FakeN8n,
) -> None:
    import subprocess
    from urllib.parse import unquote, urlsplit

    worker = start_worker(n8n_timeout_seconds=10)
    aid, uid = make_analysis(worker_settings)
    fake_n8n.plan(aid, "slow:3")
    queues.publish_job(aid, uid)
    fake_n8n.wait_call(aid)
    vhost = unquote(urlsplit(worker_settings.rabbitmq_url).path[1:])
    subprocess.run(
        ["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "test: connection lost"],
        check=True,
        capture_output=True,
    )
    # RabbitMQ hands the unacked job out again at once; the worker reconnects, gets it, and
    # waits for its own running job instead of starting a second N8N call.
    row = wait_status(worker_settings, aid, timeout=15)
    assert row.status == AnalysisStatus.COMPLETED
    assert worker.consumer.wait_connected(10)
    deadline = time.monotonic() + 10
    while queues.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queues.depth() == 0
    assert len(fake_n8n.calls_for(aid)) == 1
    # And it keeps consuming.
    later, _ = make_analysis(worker_settings, uid)
    queues.publish_job(later, uid)
    assert wait_status(worker_settings, later).status == AnalysisStatus.COMPLETED
