"""Issue 14, finding 9: persistent MQTT sessions per user are capped, oldest ended first.

Against each engine (our Mosquitto with the plugin; the NATS cluster with its auth callouts,
devices on another node than the API's), the real API (its session-cap thread running) and
PostgreSQL: a user leaves 41 persistent sessions behind (the cap is 40); the oldest is ended,
so the message queued for it while it was away is never delivered when it comes back, while the
next oldest still gets its own; a connected session is never the one ended; each ending is in
the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from paho.mqtt.client import MQTTv311
from sqlalchemy import create_engine, select

from api.app import create_app
from api.session_cap import Recorded, sessions_to_end
from plantnotify.db.models import AuditEntry, PersistentMqttSession
from tests.support import mqtt
from tests.support.api import SettingsFactory, User, register
from tests.support.broker import BrokerFactory
from tests.support.nats import NatsHandle

CAP = 40
WITHIN = 10.0


def test_the_oldest_offline_sessions_are_ended_first() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sessions = [Recorded(f"u-{i}", t0 + timedelta(seconds=i)) for i in range(5)]
    assert sessions_to_end(sessions, (), 5) == []
    assert sessions_to_end(sessions, (), 3) == ["u-0", "u-1"]
    assert sessions_to_end(sessions, {"u-0"}, 3) == ["u-1", "u-2"]
    assert sessions_to_end(list(reversed(sessions)), {"u-1"}, 4) == ["u-0"]
    assert sessions_to_end(sessions, {f"u-{i}" for i in range(5)}, 1) == []


@dataclass
class Devices:
    """Where the test's devices and its publishing service connect, and their tokens."""

    port: int
    nats: NatsHandle | None = None
    mosquitto: object | None = None

    def token(self, user: str, service: bool = False) -> str:
        handle = self.nats if self.nats is not None else self.mosquitto
        return str(handle.token(user, service=service))  # type: ignore[union-attr]


@pytest.fixture(params=["mosquitto", "nats"])
def stack(
    request: pytest.FixtureRequest,
    broker_factory: BrokerFactory,
    make_settings: SettingsFactory,
    tmp_path: Path,
) -> Iterator[tuple[Devices, TestClient]]:
    if request.param == "nats":
        cluster: NatsHandle = request.getfixturevalue("nats_cluster")
        settings = make_settings(
            broker_engine="nats",
            mqtt_port=cluster.settings.mqtt_port,
            mqtt_ws_port=cluster.settings.mqtt_ws_port,
            mqtt_max_persistent_sessions_per_user=CAP,
        )
        devices = Devices(cluster.ports[1], nats=cluster)
    else:
        b = broker_factory(data_dir=tmp_path / "broker")
        settings = make_settings(
            mqtt_port=b.port,
            mqtt_ws_port=b.ws_port,
            mqtt_data_dir=b.data_dir,
            mqtt_max_persistent_sessions_per_user=CAP,
        )
        devices = Devices(b.port, mosquitto=b)
    with TestClient(create_app(settings)) as c:
        yield devices, c


def _token(client: TestClient, user: User) -> str:
    r = client.post("/api/v1/realtime/token", headers=user.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _persistent(port: int, user: User, token: str, name: str) -> mqtt.TestClient:
    """A device that keeps its session (MQTT 3.1.1, clean session off)."""
    return mqtt.connect(
        port, user.user_id, token, f"{user.user_id}-{name}", protocol=MQTTv311, clean=False
    )


def _leave(port: int, user: User, token: str, name: str, subscribe: bool = False) -> None:
    conn = _persistent(port, user, token, name)
    if subscribe:
        assert conn.subscribe(f"users/{user.user_id}/analyses/+", qos=1) == [1]
    conn.close()


def _evicted(database_url: str, user: User) -> list[str]:
    engine = create_engine(database_url)
    with engine.connect() as db:
        rows = db.scalars(
            select(AuditEntry.detail).where(
                AuditEntry.user_id == user.user_id, AuditEntry.event == "mqtt_session_evicted"
            )
        ).all()
    engine.dispose()
    return [row["clientId"] for row in rows if row]


def _wait_evicted(database_url: str, user: User, count: int) -> list[str]:
    deadline = time.monotonic() + WITHIN
    while len(ended := _evicted(database_url, user)) < count:
        assert time.monotonic() < deadline, f"ended so far: {ended}"
        time.sleep(0.1)
    return ended


def test_41st_persistent_session_ends_the_oldest_and_its_queue(
    stack: tuple[Devices, TestClient], database_url: str
) -> None:
    b, client = stack
    user = register(client)
    token = _token(client, user)
    _leave(b.port, user, token, "s00", subscribe=True)
    _leave(b.port, user, token, "s01", subscribe=True)
    for i in range(2, CAP):
        _leave(b.port, user, token, f"s{i:02d}")
    time.sleep(1.0)
    assert _evicted(database_url, user) == [], "nothing is ended at the cap"
    _leave(b.port, user, token, f"s{CAP:02d}")  # the 41st
    assert _wait_evicted(database_url, user, 1) == [f"{user.user_id}-s00"]

    engine = create_engine(database_url)
    with engine.connect() as db:
        kept = db.scalars(
            select(PersistentMqttSession.client_id).where(
                PersistentMqttSession.user_id == user.user_id
            )
        ).all()
    engine.dispose()
    assert len(kept) == CAP and f"{user.user_id}-s00" not in kept

    # An event published while both are away: queued for s01's session only.
    service = mqtt.connect(
        b.port, "svc-test", b.token("svc-test", service=True), "svc-test-1", protocol=MQTTv311
    )
    try:
        service.publish(f"users/{user.user_id}/analyses/a1", b'{"x":1}', qos=1)
    finally:
        service.close()
    s01 = _persistent(b.port, user, token, "s01")
    try:
        assert s01.wait_message(5).topic == f"users/{user.user_id}/analyses/a1"
    finally:
        s01.close()
    s00 = _persistent(b.port, user, token, "s00")
    try:
        assert s00.drain(1.5) == [], "the ended session's queue was delivered"
    finally:
        s00.close()


def test_a_connected_session_is_never_the_one_ended(
    stack: tuple[Devices, TestClient], database_url: str
) -> None:
    b, client = stack
    user = register(client)
    token = _token(client, user)
    oldest = _persistent(b.port, user, token, "s00")  # stays connected throughout
    try:
        for i in range(1, CAP + 1):
            _leave(b.port, user, token, f"s{i:02d}")
        assert _wait_evicted(database_url, user, 1) == [f"{user.user_id}-s01"]
        time.sleep(0.5)
        assert not oldest.disconnected.is_set(), "the live session was taken over"
    finally:
        oldest.close()


def test_plugin_and_services_agree_on_the_notice_topic() -> None:
    from plantnotify.broker.config import ROOT
    from plantnotify.contracts.topics import BROKER_PERSISTENT_SESSIONS_TOPIC

    header = (ROOT / "mosquitto" / "plugin" / "persistent.h").read_text()
    assert f'#define PN_PERSISTENT_TOPIC "{BROKER_PERSISTENT_SESSIONS_TOPIC}"' in header
