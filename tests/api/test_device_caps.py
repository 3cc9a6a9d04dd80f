"""Device tokens (issue 14, finding 9: a device token moved silently to whichever user
registered it last, and devices per user were unbounded): moves are audited for both users,
and a user keeps at most MAX_DEVICES_PER_USER tokens."""

from __future__ import annotations

import secrets

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text

from plantnotify.db.models import Device
from plantnotify.settings import Settings
from tests.support.api import User


def _audit(settings: Settings, user_id: str) -> list[tuple[str, dict[str, object]]]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event, detail FROM audit_log WHERE user_id = :u ORDER BY id"),
            {"u": user_id},
        ).all()
    engine.dispose()
    return [(r.event, r.detail) for r in rows]


def test_a_device_token_moving_to_another_user_is_audited(
    client: TestClient, alice: User, bob: User, api_settings: Settings
) -> None:
    token = "fcm-move-" + secrets.token_hex(6)
    body = {"token": token, "platform": "android"}
    assert client.post("/api/v1/devices", headers=alice.headers, json=body).status_code == 201
    assert client.post("/api/v1/devices", headers=alice.headers, json=body).status_code == 201
    assert all(e != "device_moved" for e, _ in _audit(api_settings, alice.user_id))
    assert client.post("/api/v1/devices", headers=bob.headers, json=body).status_code == 201
    assert ("device_moved", {"fromUser": alice.user_id}) in _audit(api_settings, bob.user_id)
    assert ("device_moved", {"toUser": bob.user_id}) in _audit(api_settings, alice.user_id)


def test_devices_per_user_are_capped_oldest_first(
    client: TestClient, alice: User, api_settings: Settings
) -> None:
    cap = api_settings.max_devices_per_user
    tokens = [f"fcm-cap-{i:03d}-{secrets.token_hex(4)}" for i in range(cap + 3)]
    for token in tokens:
        r = client.post(
            "/api/v1/devices", headers=alice.headers, json={"token": token, "platform": "web"}
        )
        assert r.status_code == 201
    engine = create_engine(api_settings.database_url)
    with engine.connect() as conn:
        kept = set(conn.scalars(select(Device.token).where(Device.user_id == alice.user_id)))
        count = conn.scalar(
            select(func.count()).select_from(Device).where(Device.user_id == alice.user_id)
        )
    engine.dispose()
    assert count == cap
    assert tokens[-1] in kept and tokens[0] not in kept
    assert any(e == "device_evicted" for e, _ in _audit(api_settings, alice.user_id))
