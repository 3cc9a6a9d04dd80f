"""Upload through the real API -> RabbitMQ -> worker -> fake N8N -> PostgreSQL -> our
Mosquitto -> a device that logged in and asked the API for its realtime token."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from devtools.world import leaf_png
from plantnotify.contracts.events import EventType
from plantnotify.mqtt import ConnectOptions, Credentials, Message, MqttClient
from plantnotify.settings import Settings
from tests.support.api import register
from tests.support.fake_n8n import FakeN8n


@pytest.fixture
def api(worker_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(worker_settings)) as client:
        yield client


class Device:
    """A phone: connects with exactly what ``POST /realtime/token`` handed out."""

    def __init__(self, grant: dict[str, Any], settings: Settings, name: str) -> None:
        self.inbox: list[Message] = []
        options = ConnectOptions(
            host=settings.mqtt_host,
            port=grant["mqtt"]["port"],
            client_id=grant["clientIdPrefix"] + name,
            credentials=lambda: Credentials(grant["username"], grant["token"]),
            subscriptions=[(grant["topics"]["analyses"], 1)],
        )
        self.client = MqttClient(options, on_message=self.inbox.append).start()
        self.client.wait_connected(10)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in list(self.inbox)]


def _summary(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["event"], e.get("stage"), e["eventId"]) for e in events]


def test_upload_to_device_and_notifications_agree(
    api: TestClient,
    worker_settings: Settings,
    start_worker: Callable[..., Any],
    fake_n8n: FakeN8n,
) -> None:
    from tests.support.net import wait_for

    start_worker()
    user = register(api)
    grant = api.post("/api/v1/realtime/token", headers=user.headers).json()
    phone = Device(grant, worker_settings, "phone")
    try:
        accepted = api.post(
            "/api/v1/plantanalyses/async",
            headers=user.headers,
            files={"image": ("leaf.png", leaf_png(), "image/png")},
            data={"cropType": "tomato"},
        )
        assert accepted.status_code == 202, accepted.text
        aid = accepted.json()["analysisId"]

        events = wait_for(
            lambda: (evs := phone.events()) and evs[-1]["event"] == EventType.COMPLETED and evs,
            timeout=15,
            what="the Completed event on the phone",
        )
        assert [e["event"] for e in events] == [
            EventType.PROGRESS,
            EventType.PROGRESS,
            EventType.COMPLETED,
        ]
        completed = events[-1]
        assert completed["analysisId"] == aid and completed["userId"] == user.user_id
        assert completed["overallHealthScore"] == 72
        # N8N was sent the image the user uploaded.
        [call] = fake_n8n.calls_for(aid)
        assert call.body["userId"] == user.user_id and call.body["cropType"] == "tomato"

        # The image URL in the event works for its owner.
        image = api.get(completed["imageUrl"], headers=user.headers)
        assert image.status_code == 200 and image.content == leaf_png()

        # Missed-event recovery returns the very same events, oldest first.
        listed = api.get("/api/v1/notifications", headers=user.headers).json()
        assert [e["eventId"] for e in listed] == [e["eventId"] for e in events], (
            f"listed {_summary(listed)} != received {_summary(events)}"
        )
        assert listed[-1] == completed

        detail = api.get(f"/api/v1/plantanalyses/{aid}", headers=user.headers).json()
        assert detail["status"] == "Completed" and detail["overallHealthScore"] == 72
        assert detail["primaryConcern"] == completed["primaryConcern"]

        # A second device that opens later gets the retained state.
        tablet = Device(grant, worker_settings, "tablet")
        try:
            wait_for(lambda: tablet.events(), timeout=5, what="the retained event")
            assert tablet.events() == [completed] and tablet.inbox[0].retain
        finally:
            tablet.client.stop()

        # Another user sees none of it.
        other = register(api)
        assert api.get("/api/v1/notifications", headers=other.headers).json() == []
        assert api.get(f"/api/v1/plantanalyses/{aid}", headers=other.headers).status_code == 404
    finally:
        phone.client.stop()
