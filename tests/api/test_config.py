"""``GET /config``: realtime or polling per user (the rollout switch), accepted photo types, and
the push emulator's page in the local stack (nothing with real FCM)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete

from api.app import create_app
from plantnotify import rollout
from plantnotify.cli import main as cli_main
from plantnotify.db.models import RuntimeSetting
from plantnotify.db.session import session_factory
from plantnotify.settings import ConfigError, Settings
from tests.support.api import SettingsFactory, User, register


def test_local_stack_names_the_fcm_emulator(client: TestClient, api_settings: Settings) -> None:
    r = client.get("/api/v1/config")
    assert r.status_code == 200
    port = api_settings.fcm_emulator_port
    assert r.json()["pushEmulatorUrl"] == f"http://testserver:{port}/"


def test_an_explicit_emulator_endpoint_is_used_as_is(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(fcm_endpoint="http://127.0.0.1:18299"))
    with TestClient(app) as c:
        assert c.get("/api/v1/config").json()["pushEmulatorUrl"] == "http://127.0.0.1:18299/"


def test_real_fcm_credentials_hide_it(make_settings: SettingsFactory, tmp_path: Path) -> None:
    key = tmp_path / "service-account.json"
    key.write_text("{}")
    app = create_app(make_settings(fcm_credentials_file=key))
    with TestClient(app) as c:
        assert c.get("/api/v1/config").json()["pushEmulatorUrl"] is None


# --- the rollout switch ---------------------------------------------------------------------


@pytest.fixture
def switch(api_settings: Settings) -> Iterator[object]:
    """Set the rollout in the test database; back to the default (no row) afterwards."""
    engine = create_engine(api_settings.database_url)
    sessions = session_factory(engine)

    def set_percent(percent: int) -> None:
        with sessions() as s:
            rollout.write_percent(s, percent)

    yield set_percent
    with sessions() as s:
        s.execute(delete(RuntimeSetting).where(RuntimeSetting.key == rollout.KEY))
        s.commit()
    engine.dispose()


def mode(client: TestClient, user: User | None = None) -> str:
    headers = user.headers if user else {}
    answer = client.get("/api/v1/config", headers=headers).json()["realtime"]
    assert answer["pollSeconds"] > 0 and answer["checkSeconds"] > 0
    return str(answer["mode"])


def test_buckets_are_stable_and_spread() -> None:
    ids = [f"user-{i}" for i in range(2000)]
    assert [rollout.bucket(i) for i in ids] == [rollout.bucket(i) for i in ids]
    inside = {p: sum(rollout.mode_for(i, p) == "mqtt" for i in ids) for p in (0, 10, 50, 100)}
    assert inside[0] == 0 and inside[100] == len(ids)
    assert 140 <= inside[10] <= 260 and 900 <= inside[50] <= 1100, inside
    # Raising the percentage only ever adds users.
    at10 = {i for i in ids if rollout.mode_for(i, 10) == "mqtt"}
    at50 = {i for i in ids if rollout.mode_for(i, 50) == "mqtt"}
    assert at10 <= at50


def test_default_is_realtime_for_everyone(client: TestClient, alice: User) -> None:
    assert mode(client, alice) == "mqtt"
    assert mode(client) == "mqtt"
    assert client.post("/api/v1/realtime/token", headers=alice.headers).status_code == 200


def test_kill_switch_sends_everyone_to_polling_at_once(
    client: TestClient, alice: User, switch: object
) -> None:
    switch(0)  # type: ignore[operator]
    assert mode(client, alice) == "polling"
    assert mode(client) == "polling"
    r = client.post("/api/v1/realtime/token", headers=alice.headers)
    assert r.status_code == 409 and "poll" in r.json()["detail"]
    switch(100)  # type: ignore[operator]
    assert mode(client, alice) == "mqtt"
    assert client.post("/api/v1/realtime/token", headers=alice.headers).status_code == 200


def test_a_percentage_splits_users_stably(client: TestClient, switch: object) -> None:
    switch(50)  # type: ignore[operator]
    users = [register(client) for _ in range(12)]
    modes = {u.user_id: mode(client, u) for u in users}
    assert modes == {u.user_id: rollout.mode_for(u.user_id, 50) for u in users}
    assert {u.user_id: mode(client, u) for u in users} == modes  # asked again: the same
    assert mode(client) == "polling", "anonymous: realtime only when on for everybody"


def test_rollout_command(
    api_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    switch: object,
) -> None:
    monkeypatch.setenv("DATABASE_URL", api_settings.database_url)
    assert cli_main(["rollout", "10"]) == 0
    assert "10% of users" in capsys.readouterr().out
    assert cli_main(["rollout"]) == 0
    assert "10% of users" in capsys.readouterr().out
    assert cli_main(["rollout", "off"]) == 0
    assert "OFF for everyone" in capsys.readouterr().out
    assert cli_main(["rollout", "120"]) == 2
    assert cli_main(["rollout", "100%"]) == 0
    assert "on for everyone" in capsys.readouterr().out


FIREBASE_WEB = {
    "apiKey": "AIza-test",
    "projectId": "plantnotify-test",
    "messagingSenderId": "1234567890",
    "appId": "1:1234567890:web:abc",
}


def test_firebase_web_config_is_handed_to_the_web_app(make_settings: SettingsFactory) -> None:
    app = create_app(
        make_settings(fcm_web_config=json.dumps(FIREBASE_WEB), fcm_web_vapid_key="BPublicKey")
    )
    with TestClient(app) as c:
        web_push = c.get("/api/v1/config").json()["webPush"]
    assert web_push == {"firebase": FIREBASE_WEB, "vapidKey": "BPublicKey"}


def test_without_firebase_web_config_there_is_no_web_push(client: TestClient) -> None:
    assert client.get("/api/v1/config").json()["webPush"] is None


@pytest.mark.parametrize("bad", ["not json", '{"apiKey": "x"}', "[]"])
def test_a_broken_firebase_web_config_is_refused(make_settings: SettingsFactory, bad: str) -> None:
    with pytest.raises(ConfigError, match="FCM_WEB_CONFIG"):
        make_settings(fcm_web_config=bad)
