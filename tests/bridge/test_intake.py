"""What the intake keeps of an event on the MQTT thread (no database: the check against the
``events`` table comes later, in the loop)."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy.orm import sessionmaker

from bridge.intake import Intake
from bridge.store import Store
from plantnotify.contracts.events import AnalysisCompleted, AnalysisFailed, AnalysisProgress
from plantnotify.mqtt import Message


def _intake(live: int | None = 0) -> Intake:
    return Intake(
        Store(sessionmaker(), "t"),
        lambda user: live,
        grace=timedelta(seconds=10),
        lookback=timedelta(hours=1),
    )


def _msg(payload: bytes, *, retain: bool = False) -> Message:
    return Message(topic="users/u1/analyses/a1", payload=payload, qos=1, retain=retain)


def test_terminal_events_are_queued_with_their_ids() -> None:
    intake = _intake()
    done = AnalysisCompleted(analysis_id="a1", user_id="u1", image_url="/i")
    failed = AnalysisFailed(analysis_id="a1", user_id="u1", error_message="x")
    assert intake.event("u1", "a1", _msg(done.to_json_bytes()))
    assert intake.event("u1", "a1", _msg(failed.to_json_bytes()))
    # the user is offline: both are decided before any online user's event
    assert list(intake._urgent) == [
        (done.event_id, "u1", "a1"),
        (failed.event_id, "u1", "a1"),
    ]
    assert not intake._arrivals


def test_online_and_unknown_users_events_wait_behind_offline_ones() -> None:
    done = AnalysisCompleted(analysis_id="a1", user_id="u1", image_url="/i")
    for live in (1, None):  # live, or not in sync with the broker yet
        intake = _intake(live)
        assert intake.event("u1", "a1", _msg(done.to_json_bytes()))
        assert list(intake._arrivals) == [(done.event_id, "u1", "a1")]
        assert not intake._urgent
        assert intake.arrivals_waiting


def test_replays_progress_mismatches_and_garbage_are_not_queued() -> None:
    intake = _intake()
    done = AnalysisCompleted(analysis_id="a1", user_id="u1", image_url="/i")
    other_user = AnalysisCompleted(analysis_id="a1", user_id="u2", image_url="/i")
    progress = AnalysisProgress(analysis_id="a1", user_id="u1", progress=5, stage="model")
    wire = done.to_wire()
    for msg in (
        _msg(done.to_json_bytes(), retain=True),  # a retained replay
        _msg(progress.to_json_bytes()),
        _msg(other_user.to_json_bytes()),  # body and topic disagree
        _msg(b'{"event": "AnalysisCompleted"'),  # not JSON
        _msg(b'["AnalysisCompleted"]'),  # not an object
        _msg(json.dumps({**wire, "eventId": 7}).encode()),
        _msg(json.dumps({**wire, "event": "AnalysisProgress", "x": "AnalysisFailed"}).encode()),
    ):
        assert not intake.event("u1", "a1", msg)
    assert not intake.arrivals_waiting
