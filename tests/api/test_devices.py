"""FCM device registrations: upsert, move between users, delete only one's own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from plantnotify.db.models import Device
from plantnotify.settings import Settings
from tests.support.api import User

DEVICES = "/api/v1/devices"


@pytest.fixture(scope="module")
def db(api_settings: Settings) -> Iterator[Engine]:
    engine = create_engine(api_settings.database_url)
    yield engine
    engine.dispose()


def fcm_token() -> str:
    return secrets.token_urlsafe(16) + ":APA91b" + secrets.token_urlsafe(100)


def owner(db: Engine, token: str) -> tuple[str, str] | None:
    with db.connect() as conn:
        row = conn.execute(
            select(Device.user_id, Device.platform).where(Device.token == token)
        ).first()
    return (row.user_id, row.platform) if row else None


def test_register_is_an_upsert_and_a_token_moves_to_its_last_user(
    client: TestClient, db: Engine, alice: User, bob: User
) -> None:
    token = fcm_token()
    r = client.post(DEVICES, json={"token": token, "platform": "android"}, headers=alice.headers)
    assert r.status_code == 201
    assert r.json() == {"token": token, "platform": "android"}
    assert owner(db, token) == (alice.user_id, "android")

    again = client.post(
        DEVICES, json={"token": token, "platform": "android"}, headers=alice.headers
    )
    assert again.status_code == 201 and owner(db, token) == (alice.user_id, "android")

    moved = client.post(DEVICES, json={"token": token, "platform": "ios"}, headers=bob.headers)
    assert moved.status_code == 201
    assert owner(db, token) == (bob.user_id, "ios")


def test_delete_only_removes_ones_own_and_is_idempotent(
    client: TestClient, db: Engine, alice: User, bob: User
) -> None:
    token = fcm_token()
    client.post(DEVICES, json={"token": token, "platform": "web"}, headers=alice.headers)

    r = client.delete(f"{DEVICES}/{token}", headers=bob.headers)
    assert r.status_code == 204  # same answer as for an unknown token: nothing revealed
    assert owner(db, token) == (alice.user_id, "web")  # ...and nothing changed

    assert client.delete(f"{DEVICES}/{token}", headers=alice.headers).status_code == 204
    assert owner(db, token) is None
    assert client.delete(f"{DEVICES}/{token}", headers=alice.headers).status_code == 204
    assert client.delete(f"{DEVICES}/{token}").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"token": "", "platform": "android"},
        {"token": "a" * 4097, "platform": "android"},
        {"token": "has space", "platform": "android"},
        {"token": "semi;colon", "platform": "android"},
        {"token": "ok-token", "platform": "windows"},
        {"token": "ok-token"},
        {"platform": "ios"},
    ],
)
def test_bad_registrations_are_422_and_store_nothing(
    client: TestClient, db: Engine, alice: User, body: dict[str, str]
) -> None:
    r = client.post(DEVICES, json=body, headers=alice.headers)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str)
    if "token" in body:
        assert owner(db, body["token"]) is None


def test_register_requires_authentication(client: TestClient) -> None:
    assert client.post(DEVICES, json={"token": fcm_token(), "platform": "ios"}).status_code == 401
