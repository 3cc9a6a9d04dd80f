"""``GET /config``: the push emulator's page in the local stack, nothing with real FCM."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from plantnotify.settings import Settings
from tests.support.api import SettingsFactory


def test_local_stack_names_the_fcm_emulator(client: TestClient, api_settings: Settings) -> None:
    r = client.get("/api/v1/config")
    assert r.status_code == 200
    port = api_settings.fcm_emulator_port
    assert r.json() == {"pushEmulatorUrl": f"http://testserver:{port}/"}


def test_an_explicit_emulator_endpoint_is_used_as_is(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(fcm_endpoint="http://127.0.0.1:18299"))
    with TestClient(app) as c:
        assert c.get("/api/v1/config").json() == {"pushEmulatorUrl": "http://127.0.0.1:18299/"}


def test_real_fcm_credentials_hide_it(make_settings: SettingsFactory, tmp_path: Path) -> None:
    key = tmp_path / "service-account.json"
    key.write_text("{}")
    app = create_app(make_settings(fcm_credentials_file=key))
    with TestClient(app) as c:
        assert c.get("/api/v1/config").json() == {"pushEmulatorUrl": None}
