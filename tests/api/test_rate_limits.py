"""Rate limits (issue 14, finding 3: 100 wrong passwords in 8 s and then the right one worked;
225 uploads by one user in a few minutes, no 429). Two API apps share the database, as two
replicas would, and the limits hold across them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from tests.support.api import SettingsFactory, image_bytes

LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/auth/register"


@pytest.fixture(scope="module")
def replicas(make_settings: SettingsFactory) -> Iterator[tuple[TestClient, TestClient]]:
    settings = make_settings(
        rate_limits_enabled=True,
        login_failures_per_account=5,
        login_failures_per_ip=1000,
        registrations_per_ip_per_hour=1000,
        uploads_per_user_per_minute=3,
        realtime_tokens_per_user_per_minute=4,
    )
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        yield a, b


def _account(client: TestClient) -> tuple[str, str]:
    username, password = "rl-" + secrets.token_hex(5), secrets.token_urlsafe(12)
    r = client.post(REGISTER, json={"username": username, "password": password})
    assert r.status_code == 201, r.text
    return username, password


def test_wrong_passwords_lock_the_account_across_replicas(
    replicas: tuple[TestClient, TestClient],
) -> None:
    a, b = replicas
    username, password = _account(a)
    codes = []
    for i in range(8):
        client = a if i % 2 else b  # alternate replicas
        codes.append(
            client.post(LOGIN, json={"username": username, "password": "nope"}).status_code
        )
    assert codes[:5] == [401] * 5
    assert codes[5:] == [429] * 3
    # the right password does not get through the lockout
    r = a.post(LOGIN, json={"username": username, "password": password})
    assert r.status_code == 429
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert "try again" in r.json()["detail"]
    # the lockout grows: expire it by hand, fail again, and the next one is longer
    engine = create_engine(a.app.state.ctx.settings.database_url)  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE rate_limits SET blocked_until = now() - interval '1 s', "
                "reset_at = now() - interval '1 s' WHERE key = :k"
            ),
            {"k": f"login_account:{username}"},
        )
    for _ in range(6):  # five more failures lock it again; the sixth attempt meets the lock
        last = b.post(LOGIN, json={"username": username, "password": "nope"})
    assert last.status_code == 429
    assert int(last.headers["Retry-After"]) > 60
    engine.dispose()
    # once the lockout is over, the right password works (and resets the count)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE rate_limits SET blocked_until = now() - interval '1 s' WHERE key = :k"),
            {"k": f"login_account:{username}"},
        )
    engine.dispose()
    assert b.post(LOGIN, json={"username": username, "password": password}).status_code == 200


def test_a_successful_login_resets_the_failure_count(
    replicas: tuple[TestClient, TestClient],
) -> None:
    a, _ = replicas
    username, password = _account(a)
    for _ in range(3):
        for _ in range(4):
            assert a.post(LOGIN, json={"username": username, "password": "x"}).status_code == 401
        assert a.post(LOGIN, json={"username": username, "password": password}).status_code == 200


def test_uploads_and_realtime_tokens_are_limited_per_user(
    replicas: tuple[TestClient, TestClient],
) -> None:
    a, b = replicas
    username, password = _account(a)
    token = a.post(LOGIN, json={"username": username, "password": password}).json()["accessToken"]
    headers = {"Authorization": f"Bearer {token}"}
    image = image_bytes()
    codes = [
        (a if i % 2 else b)
        .post(
            "/api/v1/plantanalyses/async",
            headers=headers,
            files={"image": ("leaf.jpg", image, "image/jpeg")},
        )
        .status_code
        for i in range(5)
    ]
    assert codes == [202, 202, 202, 429, 429]
    codes = [
        (a if i % 2 else b).post("/api/v1/realtime/token", headers=headers).status_code
        for i in range(6)
    ]
    assert codes == [200] * 4 + [429] * 2
    r = a.post("/api/v1/realtime/token", headers=headers)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60


def test_registrations_are_limited_per_address(make_settings: SettingsFactory) -> None:
    settings = make_settings(rate_limits_enabled=True, registrations_per_ip_per_hour=2)
    with TestClient(create_app(settings), client=("203.0.113.7", 50000)) as c:
        codes = [
            c.post(
                REGISTER,
                json={"username": "reg-" + secrets.token_hex(4), "password": "long-enough-1"},
            ).status_code
            for _ in range(3)
        ]
    assert codes == [201, 201, 429]
