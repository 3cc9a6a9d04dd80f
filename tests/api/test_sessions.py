"""Login sessions: refresh-token rotation, reuse detection, logout (this device, everywhere),
password change, and access tokens that stop working the moment their session ends
(finding 1 of issue 14: a deleted user's access token kept working)."""

from __future__ import annotations

import hashlib

import jwt
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, select, text

from plantnotify.db.models import AuditEntry, RefreshToken, Revocation
from plantnotify.db.models import User as UserRow
from plantnotify.settings import Settings
from tests.support.api import User, login, register

REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
LOGOUT_ALL = "/api/v1/auth/logout-all"
PASSWORD = "/api/v1/auth/password"
PROTECTED = "/api/v1/plantanalyses"
REALTIME = "/api/v1/realtime/token"


def _ok(client: TestClient, token: str) -> int:
    return client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"}).status_code


def _sid(token: str) -> str:
    sid: str = jwt.decode(token, options={"verify_signature": False})["sid"]
    return sid


def test_refresh_rotates_and_the_old_token_is_spent(client: TestClient, alice: User) -> None:
    r = client.post(REFRESH, json={"refreshToken": alice.refresh_token})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "accessToken",
        "refreshToken",
        "tokenType",
        "expiresIn",
        "refreshExpiresIn",
        "userId",
    }
    assert body["userId"] == alice.user_id
    assert body["refreshToken"] != alice.refresh_token
    assert _sid(body["accessToken"]) == _sid(alice.token)  # same device, same session
    assert _ok(client, body["accessToken"]) == 200
    # the successor works once too
    r2 = client.post(REFRESH, json={"refreshToken": body["refreshToken"]})
    assert r2.status_code == 200


def test_refresh_tokens_are_stored_hashed(
    client: TestClient, alice: User, api_settings: Settings
) -> None:
    engine = create_engine(api_settings.database_url)
    with engine.connect() as conn:
        stored = set(conn.scalars(select(RefreshToken.token_hash)))
    engine.dispose()
    assert alice.refresh_token not in stored
    assert hashlib.sha256(alice.refresh_token.encode()).hexdigest() in stored


def test_reusing_a_spent_refresh_token_revokes_the_session(
    client: TestClient, api_settings: Settings
) -> None:
    user = register(client)
    other_device = login(client, user)
    first = client.post(REFRESH, json={"refreshToken": user.refresh_token}).json()
    second = client.post(REFRESH, json={"refreshToken": first["refreshToken"]}).json()
    # A thief replays the first (spent, and its successor already used): the family ends.
    r = client.post(REFRESH, json={"refreshToken": user.refresh_token})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert "log in again" in r.json()["detail"]
    assert client.post(REFRESH, json={"refreshToken": second["refreshToken"]}).status_code == 401
    assert _ok(client, second["accessToken"]) == 401
    assert _ok(client, user.token) == 401
    # the other device's login is another family: untouched
    assert _ok(client, other_device.token) == 200
    engine = create_engine(api_settings.database_url)
    with engine.connect() as conn:
        events = list(
            conn.scalars(select(AuditEntry.event).where(AuditEntry.user_id == user.user_id))
        )
        revoked = conn.scalar(
            select(Revocation.reason).where(Revocation.session_id == _sid(user.token))
        )
    engine.dispose()
    assert "refresh_reuse" in events and events.count("login") == 2
    assert revoked == "refresh_reuse"


def test_a_lost_refresh_answer_can_be_retried_once(client: TestClient) -> None:
    user = register(client)
    first = client.post(REFRESH, json={"refreshToken": user.refresh_token}).json()
    # the answer was lost: the client sends the same token again within the grace period
    retry = client.post(REFRESH, json={"refreshToken": user.refresh_token})
    assert retry.status_code == 200
    assert _ok(client, retry.json()["accessToken"]) == 200
    # the lost answer's token was retired: it never reached the client, so whoever sends it
    # holds a stolen copy, and the session ends
    assert client.post(REFRESH, json={"refreshToken": first["refreshToken"]}).status_code == 401
    assert _ok(client, retry.json()["accessToken"]) == 401


def test_garbage_refresh_tokens_are_401_or_422(client: TestClient) -> None:
    assert client.post(REFRESH, json={"refreshToken": "A" * 43}).status_code == 401
    assert client.post(REFRESH, json={"refreshToken": "no spaces!"}).status_code == 422
    assert client.post(REFRESH, json={}).status_code == 422


def test_logout_ends_this_device_only(client: TestClient) -> None:
    user = register(client)
    phone = login(client, user)
    r = client.post(LOGOUT, json={"refreshToken": user.refresh_token})
    assert r.status_code == 204
    assert _ok(client, user.token) == 401
    assert client.post(REALTIME, headers=user.headers).status_code == 401
    assert client.post(REFRESH, json={"refreshToken": user.refresh_token}).status_code == 401
    assert _ok(client, phone.token) == 200
    # idempotent, and with the bearer token alone
    assert client.post(LOGOUT, json={"refreshToken": user.refresh_token}).status_code == 204
    assert client.post(LOGOUT, headers=phone.headers).status_code == 204
    assert _ok(client, phone.token) == 401
    assert client.post(LOGOUT).status_code == 401


def test_logout_everywhere_ends_every_session(client: TestClient) -> None:
    user = register(client)
    phone = login(client, user)
    assert client.post(LOGOUT_ALL, headers=phone.headers).status_code == 204
    for device in (user, phone):
        assert _ok(client, device.token) == 401
        assert client.post(REFRESH, json={"refreshToken": device.refresh_token}).status_code == 401
    assert _ok(client, login(client, user).token) == 200  # logging in again works


def test_password_change_ends_every_session(client: TestClient) -> None:
    user = register(client)
    phone = login(client, user)
    wrong = client.post(
        PASSWORD,
        headers=user.headers,
        json={"currentPassword": "not-it-at-all", "newPassword": "a-new-password-1"},
    )
    assert wrong.status_code == 401
    assert _ok(client, phone.token) == 200
    r = client.post(
        PASSWORD,
        headers=user.headers,
        json={"currentPassword": user.password, "newPassword": "a-new-password-1"},
    )
    assert r.status_code == 200, r.text
    assert _ok(client, r.json()["accessToken"]) == 200
    for device in (user, phone):
        assert _ok(client, device.token) == 401
        assert client.post(REFRESH, json={"refreshToken": device.refresh_token}).status_code == 401
    old = client.post(
        "/api/v1/auth/login", json={"username": user.username, "password": user.password}
    )
    assert old.status_code == 401
    new = client.post(
        "/api/v1/auth/login", json={"username": user.username, "password": "a-new-password-1"}
    )
    assert new.status_code == 200


def test_a_deleted_users_tokens_stop_working_at_once(
    client: TestClient, api_settings: Settings
) -> None:
    """Finding 1: with the user's row gone, the access token listed analyses, uploaded and
    minted realtime tokens."""
    user = register(client)
    assert _ok(client, user.token) == 200
    engine = create_engine(api_settings.database_url)
    with engine.begin() as conn:
        conn.execute(delete(UserRow).where(UserRow.id == user.user_id))
    engine.dispose()
    assert _ok(client, user.token) == 401
    assert client.post(REALTIME, headers=user.headers).status_code == 401
    r = client.post(
        "/api/v1/plantanalyses/async",
        headers=user.headers,
        files={"image": ("leaf.png", b"\x89PNG\r\n\x1a\n", "image/png")},
    )
    assert r.status_code == 401
    assert client.post(REFRESH, json={"refreshToken": user.refresh_token}).status_code == 401


def test_failed_logins_are_audited(client: TestClient, api_settings: Settings) -> None:
    user = register(client)
    client.post("/api/v1/auth/login", json={"username": user.username, "password": "wrong-1"})
    engine = create_engine(api_settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event, detail FROM audit_log WHERE user_id = :u ORDER BY id"),
            {"u": user.user_id},
        ).all()
    engine.dispose()
    events = [r.event for r in rows]
    assert events[:2] == ["registered", "login"] and "login_failed" in events
    assert all(user.password not in str(r.detail) for r in rows)
