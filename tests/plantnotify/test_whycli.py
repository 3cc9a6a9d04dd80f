"""``plantnotify why``: an analysis' timeline and a user's reachability, from the real
database and our broker (the live session is a real MQTT connection)."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from devtools.world import make_analysis, sessions_for, settings_env
from plantnotify.cli import main
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.events import AnalysisCompleted, utcnow
from plantnotify.db.models import (
    Analysis,
    Device,
    EventRow,
    PushAttempt,
    PushDecision,
    PushDelivery,
)
from plantnotify.settings import Settings
from plantnotify.timeline import Step, record_step
from tests.support.mqtt import connect

TRACE = "1f2e3d4c5b6a79881f2e3d4c5b6a7988"


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in settings_env(settings).items():
        if key not in os.environ or os.environ[key] != value:
            monkeypatch.setenv(key, value)
    return settings


def _delivered_and_pushed(settings: Settings) -> tuple[str, str]:
    """An analysis whose Completed event one device confirmed and one phone was pushed."""
    aid, uid = make_analysis(settings)
    token = f"phone-token-{uuid.uuid4().hex}-123456"
    now = utcnow()
    event = AnalysisCompleted(
        analysis_id=aid, user_id=uid, trace_id=TRACE, completed_at=now, image_url="/i"
    )
    with sessions_for(settings).begin() as s:
        s.execute(update(Analysis).where(Analysis.id == aid).values(trace_id=TRACE))
        s.add(
            EventRow(
                id=event.event_id,
                user_id=uid,
                analysis_id=aid,
                type=str(event.event),
                payload=event.to_wire(),
                created_at=now,
                expires_at=now + timedelta(days=7),
                published_at=now + timedelta(milliseconds=3),
            )
        )
        s.flush()
        record_step(
            s,
            analysis_id=aid,
            user_id=uid,
            trace_id=TRACE,
            step=Step.DELIVERED,
            at=now + timedelta(milliseconds=9),
            event_id=event.event_id,
            device=f"{uid}-browser",
            detail={"transport": "ws", "latencyMs": 9},
        )
        s.add(Device(token=token, user_id=uid, platform="android"))
        s.add(
            PushDecision(
                event_id=event.event_id,
                user_id=uid,
                analysis_id=aid,
                event_type=str(event.event),
                published_at=now,
                live_at_publish=0,
                due_at=now,
                state="pushed",
                decided_at=now + timedelta(milliseconds=20),
            )
        )
        s.flush()
        delivery = PushDelivery(
            event_id=event.event_id,
            user_id=uid,
            device_token=token,
            platform="android",
            status="sent",
            attempts=1,
            next_attempt_at=now,
            finished_at=now + timedelta(milliseconds=60),
        )
        s.add(delivery)
        s.flush()
        s.add(
            PushAttempt(
                delivery_id=delivery.id,
                attempt=1,
                started_at=now + timedelta(milliseconds=25),
                finished_at=now + timedelta(milliseconds=60),
                outcome="sent",
                http_status=200,
            )
        )
    return aid, uid


def test_why_prints_every_step_with_the_trace_id(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    aid, uid = _delivered_and_pushed(env)
    assert main(["why", aid]) == 0
    out = capsys.readouterr().out
    assert f"trace {TRACE}" in out
    for step in ("uploaded", "committed", "published", "delivered", "push_decision", "push"):
        assert f" {step} " in out or f" {step}\n" in out, (step, out)
    assert f"[{uid}-browser]" in out and "transport=ws" in out
    assert "android …123456" in out and "phone-token" not in out, "never a whole device token"
    assert "outcome: delivered live to" in out and "pushed: FCM accepted 1 of 1" in out

    assert main(["why", aid, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["traceId"] == TRACE
    assert [s["step"] for s in doc["steps"]][:1] == ["uploaded"]


def test_why_user_shows_live_sessions_devices_receipts_and_analyses(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    aid, uid = _delivered_and_pushed(env)
    token = mint_mqtt_token(env.mqtt_signer, uid, 300)
    client = connect(env.mqtt_port, uid, token, f"{uid}-pixel7")
    try:
        deadline = time.monotonic() + 10
        while True:
            assert main(["why", "--user", uid, "--json"]) == 0
            doc = json.loads(capsys.readouterr().out)
            if doc["liveSessions"].get("connections") == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert doc["liveSessions"] == {
            "known": True,
            "connections": 1,
            "clientIds": [f"{uid}-pixel7"],
        }
    finally:
        client.close()
    assert [d["device"] for d in doc["devices"]] == ["android …123456"]
    assert doc["devices"][0]["lastPushStatus"] == "sent"
    assert doc["lastReceipts"][0]["device"] == f"{uid}-browser"
    assert [a["analysisId"] for a in doc["analyses"]] == [aid]
    assert main(["why", "--user", uid]) == 0
    text = capsys.readouterr().out
    assert "registered devices: 1" in text and f"{aid} Processing" in text


def test_why_refuses_unclear_requests(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["why"]) == 2
    assert main(["why", "--user", "not a user"]) == 2
    assert main(["why", str(uuid.uuid4())]) == 1
    assert "no analysis" in capsys.readouterr().err
