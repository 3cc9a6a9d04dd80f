"""API test fixtures and helpers (registered in tests/conftest.py, usable by every part's tests):
a real app (FastAPI TestClient) on the test database, a private RabbitMQ vhost (so tests can
read what landed in the queue), and users with tokens."""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from plantnotify.settings import Settings, load_settings
from tests.support.rabbit import private_vhost
from tests.support.services import RUN_ID

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here would skip its rewrite
    from tests.support.broker import BrokerHandle


@pytest.fixture(scope="session")
def api_rabbitmq_url(rabbitmq_url: str) -> Iterator[str]:
    with private_vhost(f"plantnotify_api_test_{RUN_ID}") as url:
        yield url


SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def make_settings(broker: BrokerHandle, api_rabbitmq_url: str) -> SettingsFactory:
    """Settings for an API app: the test database, our Mosquitto, the API's private vhost and
    a 1 MiB upload limit (so size tests stay fast); ``overrides`` change any field."""

    def make(**overrides: Any) -> Settings:
        values = broker.settings.model_dump()
        values.update(rabbitmq_url=api_rabbitmq_url, max_upload_mb=1)
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture(scope="session")
def api_settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def api_client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as c:
        yield c


@dataclass
class User:
    user_id: str
    username: str
    password: str
    token: str
    refresh_token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def register(client: TestClient) -> User:
    username = "u-" + secrets.token_hex(5)
    password = secrets.token_urlsafe(12)
    r = client.post("/api/v1/auth/register", json={"username": username, "password": password})
    assert r.status_code == 201, r.text
    user_id = r.json()["userId"]
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    return User(user_id, username, password, body["accessToken"], body["refreshToken"])


def login(client: TestClient, user: User) -> User:
    """Another login (another device) of the same account."""
    r = client.post(
        "/api/v1/auth/login", json={"username": user.username, "password": user.password}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    return User(
        user.user_id, user.username, user.password, body["accessToken"], body["refreshToken"]
    )


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 160, 60)).save(buf, fmt)
    return buf.getvalue()
