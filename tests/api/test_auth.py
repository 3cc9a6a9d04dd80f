"""Accounts and bearer tokens, attacked: weak input, conflicts, forged and foreign tokens."""

from __future__ import annotations

import base64
import json
import secrets
import time

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from api.tokens import AccessTokens
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.db.models import User as UserRow
from plantnotify.settings import Settings
from tests.support.api import User, register

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
PROTECTED = "/api/v1/plantanalyses"


def test_register_then_login_gives_a_working_token(client: TestClient) -> None:
    username = "Farmer.Jo-" + secrets.token_hex(3)
    r = client.post(REGISTER, json={"username": username, "password": "correct horse"})
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"userId", "username"}
    assert body["username"] == username.lower()  # case-insensitive accounts
    r = client.post(LOGIN, json={"username": username.upper(), "password": "correct horse"})
    assert r.status_code == 200
    login = r.json()
    assert set(login) == {
        "accessToken",
        "refreshToken",
        "tokenType",
        "expiresIn",
        "refreshExpiresIn",
        "userId",
    }
    assert login["tokenType"] == "bearer" and login["userId"] == body["userId"]
    assert login["expiresIn"] > 0
    r = client.get(PROTECTED, headers={"Authorization": f"Bearer {login['accessToken']}"})
    assert r.status_code == 200 and r.json() == []


def test_password_is_stored_as_argon2id(client: TestClient, api_settings: Settings) -> None:
    user = register(client)
    engine = create_engine(api_settings.database_url)
    with engine.connect() as conn:
        stored = conn.execute(
            select(UserRow.password_hash).where(UserRow.id == user.user_id)
        ).scalar_one()
    engine.dispose()
    assert stored.startswith("$argon2id$")
    assert user.password not in stored


def test_taken_username_is_409_in_any_case(client: TestClient, alice: User) -> None:
    for name in (alice.username, alice.username.upper()):
        r = client.post(REGISTER, json={"username": name, "password": "another-password"})
        assert r.status_code == 409
        assert "taken" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ab", "password": "hunter2hunter2"}, "username"),
        ({"username": "a" * 65, "password": "hunter2hunter2"}, "username"),
        ({"username": "bad name", "password": "hunter2hunter2"}, "username"),
        ({"username": "../etc", "password": "hunter2hunter2"}, "username"),
        ({"username": "user#1", "password": "hunter2hunter2"}, "username"),
        ({"username": "ok-user", "password": "sekr1t"}, "password"),
        ({"username": "ok-user", "password": "x" * 257}, "password"),
        ({"username": "ok-user"}, "password"),
        ({"password": "hunter2hunter2"}, "username"),
    ],
)
def test_weak_or_bad_registration_is_422_and_stores_nothing(
    client: TestClient, body: dict[str, str], field: str
) -> None:
    r = client.post(REGISTER, json=body)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str) and field in detail
    assert "hunter2hunter2" not in r.text and "sekr1t" not in r.text  # passwords never echoed


def test_password_equal_to_username_is_refused(client: TestClient) -> None:
    r = client.post(REGISTER, json={"username": "sameasname", "password": "SameAsName"})
    assert r.status_code == 422 and "username" in r.json()["detail"]


def test_broken_json_is_422_with_a_clear_message(client: TestClient) -> None:
    r = client.post(REGISTER, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert "JSON" in r.json()["detail"]


def test_login_failures_are_one_generic_401(client: TestClient, alice: User) -> None:
    wrong = client.post(LOGIN, json={"username": alice.username, "password": "wrong-password"})
    unknown = client.post(
        LOGIN, json={"username": "nobody-" + secrets.token_hex(4), "password": "x"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Wrong username or password"}


# --- bearer tokens --------------------------------------------------------------------------


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(user_id: str, **extra: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "sub": user_id,
        "iat": now,
        "exp": now + 600,
        "aud": "plantnotify-api",
        "iss": "plantnotify",
        **extra,
    }


def test_attack_tokens_are_401(client: TestClient, alice: User, api_settings: Settings) -> None:
    secret = api_settings.jwt_secret
    now = int(time.time())
    uid = alice.user_id
    attacks = {
        "missing": None,
        "empty": "",
        "garbage": "not.a.token",
        "expired": jwt.encode(_claims(uid, exp=now - 3600, iat=now - 7200), secret, "HS256"),
        "wrong secret": jwt.encode(_claims(uid), "w" * 40, "HS256"),
        "alg none": _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(_claims(uid)) + ".",
        "alg none signed": _b64({"alg": "none"}) + "." + _b64(_claims(uid)) + ".c2ln",
        "no exp": jwt.encode({k: v for k, v in _claims(uid).items() if k != "exp"}, secret),
        "wrong audience": jwt.encode(_claims(uid, aud="someone-else"), secret, "HS256"),
        "no audience": jwt.encode({k: v for k, v in _claims(uid).items() if k != "aud"}, secret),
        "wrong issuer": jwt.encode(_claims(uid, iss="evil"), secret, "HS256"),
        "bad user id": jwt.encode(_claims("../" + uid), secret, "HS256"),
        "HS512 same secret": jwt.encode(_claims(uid), secret, "HS512"),
        # An MQTT token (same secret) must not work as an API token: cross-JWT confusion.
        "mqtt token": mint_mqtt_token(api_settings.mqtt_signer, uid, 600),
        # A well-signed token of no login session, or of someone else's / a made-up one.
        "no session": jwt.encode(_claims(uid), secret, "HS256"),
        "unknown session": jwt.encode(_claims(uid, sid="0" * 32), secret, "HS256"),
        "huge": "a" * 10000,
    }
    # tampered payload: alice's valid token with bob's sub and the original signature
    header, _, sig = alice.token.split(".")
    attacks["tampered"] = f"{header}.{_b64(_claims('someone-else'))}.{sig}"
    for name, token in attacks.items():
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        r = client.get(PROTECTED, headers=headers)
        assert r.status_code == 401, name
        assert r.headers["WWW-Authenticate"] == "Bearer", name
        assert "detail" in r.json(), name
    # other schemes are not bearer tokens
    r = client.get(PROTECTED, headers={"Authorization": f"Basic {alice.token}"})
    assert r.status_code == 401


def test_a_valid_token_passes(client: TestClient, alice: User, api_settings: Settings) -> None:
    sid = jwt.decode(alice.token, options={"verify_signature": False})["sid"]
    token = AccessTokens(api_settings).issue(alice.user_id, sid)
    assert client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    claims = jwt.decode(token, api_settings.jwt_secret, ["HS256"], audience="plantnotify-api")
    assert set(claims) == {"sub", "sid", "iat", "exp", "aud", "iss"}
    assert claims["sub"] == alice.user_id


def test_huge_json_bodies_are_refused_before_being_read(client: TestClient) -> None:
    big = b'{"username":"someone","password":"' + b"x" * (1024 * 1024) + b'"}'
    for path in (LOGIN, REGISTER, "/api/v1/devices"):
        r = client.post(path, content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, path
        assert "KiB" in r.json()["detail"]

    def chunked():  # no Content-Length: counted while read
        yield b'{"username":"someone","password":"'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    r = client.post(LOGIN, content=chunked(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "KiB" in r.json()["detail"]
