"""A small world of analyses and devices, for the tests and the benchmarks.

Rows written as the API writes them, a user's device (an MQTT subscriber with *user*
credentials, as a phone would connect), and the environment that makes a child process load
given settings. Development code: production never imports it.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from plantnotify.contracts.events import AnalysisStatus
from plantnotify.contracts.ids import new_client_id, new_user_id
from plantnotify.contracts.topics import user_filter
from plantnotify.db.models import Analysis, AnalysisImage, EventRow
from plantnotify.db.session import engine_for, session_factory
from plantnotify.mqtt import ConnectOptions, Credentials, Message, MqttClient
from plantnotify.settings import Settings


def leaf_png(spots: int = 5) -> bytes:
    img = Image.new("RGB", (160, 120), (235, 235, 230))
    draw = ImageDraw.Draw(img)
    draw.ellipse((20, 10, 140, 110), fill=(50, 140, 45))
    for i in range(spots):
        x, y = 40 + (i * 29) % 80, 30 + (i * 17) % 60
        draw.ellipse((x, y, x + 12, y + 10), fill=(110, 70, 30))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def sessions_for(settings: Settings) -> sessionmaker[Session]:
    return session_factory(engine_for(settings.database_url))


def make_analysis(
    settings: Settings,
    user_id: str | None = None,
    *,
    crop_type: str | None = "tomato",
    image: bytes | None = None,
) -> tuple[str, str]:
    """Insert a Processing analysis with its image, as the API does; (analysis_id, user_id)."""
    uid = user_id or new_user_id()
    aid = str(uuid.uuid4())
    data = image if image is not None else leaf_png()
    with sessions_for(settings).begin() as s:
        s.add(
            Analysis(
                id=aid,
                user_id=uid,
                status=AnalysisStatus.PROCESSING,
                crop_type=crop_type,
                mime_type="image/png",
                image_size=len(data),
            )
        )
        s.flush()
        s.add(AnalysisImage(analysis_id=aid, data=data))
    return aid, uid


def event_rows(settings: Settings, analysis_id: str) -> list[EventRow]:
    with sessions_for(settings)() as s:
        return list(
            s.scalars(
                select(EventRow).where(EventRow.analysis_id == analysis_id).order_by(EventRow.seq)
            )
        )


def with_overrides(base: Settings, **overrides: Any) -> Settings:
    return Settings(**{**base.model_dump(), **overrides})


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTNOTIFY_TEST_")}
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(name.upper(), None)
        else:
            env[name.upper()] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Subscriber:
    """A user's device: user token (no service role), subscribed to ``users/{id}/#``."""

    def __init__(self, settings: Settings, user_id: str) -> None:
        from plantnotify.contracts.claims import mint_mqtt_token

        self.user_id = user_id
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        token = mint_mqtt_token(settings.mqtt_signer, user_id, 300)
        options = ConnectOptions(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            client_id=new_client_id(user_id),
            credentials=lambda: Credentials(user_id, token),
            subscriptions=[(user_filter(user_id), 1)],
        )
        self.client = MqttClient(options, on_message=self._on_message)

    def _on_message(self, message: Message) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def __enter__(self) -> Subscriber:
        self.client.start()
        self.client.wait_connected(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()

    def events(self, analysis_id: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            out = [json.loads(m.payload) for m in self.messages if m.payload]
        return [e for e in out if analysis_id is None or e.get("analysisId") == analysis_id]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                events = [json.loads(m.payload) for m in self.messages if m.payload]
                if predicate(events):
                    return events
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; events so far: {events}")
                self._cond.wait(left)

    def wait_event(self, analysis_id: str, event: str, timeout: float = 15.0) -> dict[str, Any]:
        events = self.wait_for(
            lambda evs: any(
                e.get("analysisId") == analysis_id and e.get("event") == event for e in evs
            ),
            timeout,
        )
        return next(
            e for e in events if e.get("analysisId") == analysis_id and e.get("event") == event
        )
