"""Bridge test helpers: events produced like the worker does (DB row, retained QoS-1 publish
with a service token, then ``published_at``), devices, bridges, and database inspection."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bridge.service import Bridge
from devtools.fcm_emulator import FcmEmulator
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.events import (
    AnalysisCompleted,
    AnalysisFailed,
    AnalysisProgress,
    utcnow,
)
from plantnotify.contracts.topics import analysis_topic, receipts_topic
from plantnotify.db.models import (
    Device,
    EventRow,
    PushAttempt,
    PushDecision,
    PushDelivery,
    PushReceipt,
)
from plantnotify.db.session import engine_for, session_factory
from plantnotify.mqtt import ConnectOptions, Credentials, MqttClient
from plantnotify.settings import Settings
from tests.support.broker import BrokerHandle, settings_with
from tests.support.mqtt import TestClient, connect
from tests.support.net import wait_for

AnyEvent = AnalysisCompleted | AnalysisFailed | AnalysisProgress


def new_user() -> str:
    return "u" + secrets.token_hex(5)


def bridge_settings(settings: Settings, emulator: FcmEmulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "fcm_endpoint": emulator.url,
        "fallback_grace_seconds": 1.0,
        "bridge_poll_seconds": 0.2,
        "fcm_retry_base_seconds": 0.2,
        "fcm_max_attempts": 3,
        "fcm_concurrency": 4,
        "bridge_session_expiry_seconds": 120,
        "bridge_lease_seconds": 30.0,
    }
    values.update(overrides)
    return settings_with(settings, **values)


class World:
    """Produces events like the worker, registers devices, reads the bridge's tables."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db: sessionmaker[Session] = session_factory(engine_for(settings.database_url))
        self._publisher: MqttClient | None = None

    def publisher(self) -> MqttClient:
        if self._publisher is None or not self._publisher.is_connected:
            if self._publisher is not None:
                self._publisher.stop()
            user = "test-worker"

            def creds() -> Credentials:
                token = mint_mqtt_token(self.settings.mqtt_signer, user, 3600, service=True)
                return Credentials(user, token)

            self._publisher = MqttClient(
                ConnectOptions(
                    host=self.settings.mqtt_host,
                    port=self.settings.mqtt_port,
                    client_id=f"{user}-{secrets.token_hex(4)}",
                    credentials=creds,
                )
            ).start()
            self._publisher.wait_connected(10)
        return self._publisher

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.stop()

    # --- devices and events -----------------------------------------------------------------

    def add_device(self, user_id: str, token: str | None = None, platform: str = "android") -> str:
        token = token or "ok-" + secrets.token_hex(8)
        with self.db.begin() as s:
            s.add(Device(token=token, user_id=user_id, platform=platform))
        return token

    def devices(self, user_id: str) -> set[str]:
        with self.db() as s:
            return set(s.execute(select(Device.token).where(Device.user_id == user_id)).scalars())

    def event(self, user_id: str, kind: str = "completed", **fields: Any) -> AnyEvent:
        aid = fields.pop("analysis_id", None) or "a-" + secrets.token_hex(8)
        if kind == "completed":
            fields = {"crop_type": "Tomato", "overall_health_score": 81, **fields}
            return AnalysisCompleted(
                analysis_id=aid,
                user_id=user_id,
                image_url=f"/api/v1/plantanalyses/{aid}/image",
                **fields,
            )
        if kind == "failed":
            return AnalysisFailed(
                analysis_id=aid, user_id=user_id, error_message="unreadable", **fields
            )
        return AnalysisProgress(
            analysis_id=aid, user_id=user_id, progress=50, stage="model", **fields
        )

    def store(self, event: AnyEvent, *, published: bool = False) -> None:
        now = utcnow()
        with self.db.begin() as s:
            s.add(
                EventRow(
                    id=event.event_id,
                    user_id=event.user_id,
                    analysis_id=event.analysis_id,
                    type=str(event.event),
                    payload=event.to_wire(),
                    expires_at=now + timedelta(days=7),
                    published_at=now if published else None,
                )
            )

    def publish(self, event: AnyEvent) -> None:
        self.publisher().publish(
            analysis_topic(event.user_id, event.analysis_id),
            event.to_json_bytes(),
            qos=1,
            retain=True,
        ).wait(5)
        with self.db.begin() as s:
            s.execute(
                update(EventRow).where(EventRow.id == event.event_id).values(published_at=utcnow())
            )

    def emit(self, user_id: str, kind: str = "completed", **fields: Any) -> AnyEvent:
        """Outbox row, retained QoS-1 publish, then published_at: what the worker does."""
        event = self.event(user_id, kind, **fields)
        self.store(event)
        self.publish(event)
        return event

    # --- the bridge's tables ----------------------------------------------------------------

    def decision(self, event_id: str) -> PushDecision | None:
        with self.db() as s:
            return s.get(PushDecision, event_id)

    def final_decision(self, event_id: str, timeout: float = 10.0) -> PushDecision:
        def check() -> PushDecision | None:
            d = self.decision(event_id)
            return d if d is not None and d.state != "pending" else None

        return wait_for(check, timeout=timeout, what=f"a final decision for {event_id}")

    def deliveries(self, event_id: str) -> list[PushDelivery]:
        with self.db() as s:
            return list(
                s.execute(
                    select(PushDelivery)
                    .where(PushDelivery.event_id == event_id)
                    .order_by(PushDelivery.id)
                ).scalars()
            )

    def finished(self, event_id: str, count: int, timeout: float = 10.0) -> dict[str, PushDelivery]:
        """Wait until ``count`` deliveries of the event reached a final state; by device token."""

        def check() -> dict[str, PushDelivery] | None:
            rows = self.deliveries(event_id)
            done = [r for r in rows if r.finished_at is not None]
            return {r.device_token: r for r in rows} if len(done) == count == len(rows) else None

        return wait_for(check, timeout=timeout, what=f"{count} finished deliveries")

    def attempts(self, delivery_id: int) -> list[PushAttempt]:
        with self.db() as s:
            return list(
                s.execute(
                    select(PushAttempt)
                    .where(PushAttempt.delivery_id == delivery_id)
                    .order_by(PushAttempt.id)
                ).scalars()
            )

    def receipt(self, event_id: str) -> PushReceipt | None:
        with self.db() as s:
            return s.get(PushReceipt, event_id)


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    w = World(settings)
    yield w
    w.close()


@dataclass
class Phone:
    """A user's live device: subscribed to its analyses, can confirm events."""

    user_id: str
    client: TestClient

    def confirm(self, event_id: str, raw: bytes | None = None) -> int:
        payload = raw if raw is not None else f'{{"eventId": "{event_id}"}}'.encode()
        return self.client.publish(receipts_topic(self.user_id), payload, qos=1)

    def close(self) -> None:
        self.client.close()


PhoneFactory = Callable[..., Phone]


@pytest.fixture
def phone(broker: BrokerHandle) -> Iterator[PhoneFactory]:
    phones: list[Phone] = []

    def factory(user_id: str, name: str = "phone", handle: BrokerHandle | None = None) -> Phone:
        b = handle or broker
        c = connect(b.port, user_id, b.token(user_id, ttl=600), f"{user_id}-{name}")
        assert c.subscribe(f"users/{user_id}/analyses/+") == [1]
        p = Phone(user_id, c)
        phones.append(p)
        return p

    yield factory
    for p in phones:
        with contextlib.suppress(Exception):
            p.close()


BridgeFactory = Callable[..., Bridge]


@pytest.fixture
def make_bridge(settings: Settings, fcm_emulator: FcmEmulator) -> Iterator[BridgeFactory]:
    bridges: list[Bridge] = []

    def factory(
        *, base: Settings | None = None, instance: str | None = None, **overrides: Any
    ) -> Bridge:
        s = bridge_settings(base or settings, fcm_emulator, **overrides)
        b = Bridge(s, instance=instance or "t-" + secrets.token_hex(4)).start()
        bridges.append(b)
        b.wait_in_sync(15)
        return b

    yield factory
    for b in bridges:
        b.stop()


def wait_live(bridge: Bridge, user_id: str, count: int, timeout: float = 5.0) -> None:
    """The bridge's picture shows ``count`` live connections for the user (read from its loop's
    state; only used to order a test's steps, never as the assertion under test)."""
    wait_for(
        lambda: bridge.picture.live(user_id) == count,
        timeout=timeout,
        what=f"{user_id} live={count}",
    )
