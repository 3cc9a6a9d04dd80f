"""Through the whole system: real API, RabbitMQ, worker, fake N8N, our Mosquitto, the bridge,
firebase-admin and the FCM emulator. A device registers its FCM token with ``POST /devices``;
nobody has the app open; the upload ends in exactly one push naming the result."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from bridge.decision import Reason
from devtools.fcm_emulator import FcmEmulator
from devtools.world import leaf_png
from plantnotify.mqtt import ConnectOptions, Credentials, Message, MqttClient
from plantnotify.settings import Settings
from tests.bridge.conftest import BridgeFactory, World
from tests.support.api import register
from tests.support.net import wait_for


@pytest.fixture
def api(worker_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(worker_settings)) as client:
        yield client


def _upload(api: TestClient, headers: dict[str, str]) -> str:
    r = api.post(
        "/api/v1/plantanalyses/async",
        headers=headers,
        files={"image": ("leaf.png", leaf_png(), "image/png")},
        data={"cropType": "tomato"},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["analysisId"])


def test_upload_by_a_user_with_the_app_closed_ends_in_one_push(
    api: TestClient,
    worker_settings: Settings,
    start_worker: Callable[..., Any],
    make_bridge: BridgeFactory,
    fcm_emulator: FcmEmulator,
) -> None:
    make_bridge(base=worker_settings, fallback_grace_seconds=30)
    start_worker()
    user = register(api)
    token = "ok-e2e-" + user.user_id
    assert api.post(
        "/api/v1/devices", headers=user.headers, json={"token": token, "platform": "android"}
    ).status_code in (200, 201)

    aid = _upload(api, user.headers)
    (push,) = wait_for(lambda: fcm_emulator.deliveries(token), timeout=20, what="the push")
    msg = push["message"]
    assert msg["data"]["analysisId"] == aid and msg["data"]["event"] == "AnalysisCompleted"
    assert msg["data"]["deepLink"] == f"app://analysis/{aid}"
    assert msg["notification"]["title"] == "Analysis complete"
    assert "72/100" in msg["notification"]["body"]
    listed = api.get("/api/v1/notifications", headers=user.headers).json()
    completed = [e for e in listed if e["event"] == "AnalysisCompleted"]
    assert [e["eventId"] for e in completed] == [msg["data"]["eventId"]]
    # Progress events on the way were never pushed, and nothing else arrives later.
    d = World(worker_settings).final_decision(msg["data"]["eventId"])
    assert d.reason == Reason.OFFLINE_AT_PUBLISH
    assert len(fcm_emulator.deliveries(token)) == 1


def test_app_open_and_confirming_means_no_push(
    api: TestClient,
    worker_settings: Settings,
    start_worker: Callable[..., Any],
    make_bridge: BridgeFactory,
    fcm_emulator: FcmEmulator,
) -> None:
    make_bridge(base=worker_settings, fallback_grace_seconds=5)
    start_worker()
    user = register(api)
    token = "ok-e2e-open-" + user.user_id
    api.post("/api/v1/devices", headers=user.headers, json={"token": token, "platform": "ios"})
    grant = api.post("/api/v1/realtime/token", headers=user.headers).json()
    client: MqttClient | None = None

    def on_message(m: Message) -> None:  # the app: confirm every terminal event it shows
        event = json.loads(m.payload)
        if event["event"] != "AnalysisProgress" and client is not None:
            payload = json.dumps({"eventId": event["eventId"]}).encode()
            client.publish(grant["topics"]["receipts"], payload, qos=1)

    client = MqttClient(
        ConnectOptions(
            host=worker_settings.mqtt_host,
            port=grant["mqtt"]["port"],
            client_id=grant["clientIdPrefix"] + "phone",
            credentials=lambda: Credentials(grant["username"], grant["token"]),
            subscriptions=[(grant["topics"]["analyses"], 1)],
        ),
        on_message=on_message,
    ).start()
    try:
        client.wait_connected(10)
        aid = _upload(api, user.headers)
        world = World(worker_settings)
        eid = wait_for(
            lambda: next(
                (
                    e["eventId"]
                    for e in api.get("/api/v1/notifications", headers=user.headers).json()
                    if e["analysisId"] == aid and e["event"] == "AnalysisCompleted"
                ),
                None,
            ),
            timeout=20,
            what="the Completed event",
        )
        d = world.final_decision(eid, timeout=10)  # before the grace period ends
        assert (d.state, d.live_at_publish) == ("suppressed", 1)
        assert fcm_emulator.deliveries(token) == []
    finally:
        client.stop()
