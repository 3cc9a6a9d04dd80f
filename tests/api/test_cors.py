"""CORS through the real app: an explicit allow-list, never `*` together with credentials."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from plantnotify.settings import ConfigError
from tests.support.api import SettingsFactory, register

ALLOWED = "https://app.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.fixture(scope="module")
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    settings = make_settings(cors_origins=f"{ALLOWED}, http://localhost:5173")
    with TestClient(create_app(settings)) as c:
        yield c


def test_preflight_allowed_for_a_listed_origin(client: TestClient) -> None:
    r = client.options("/api/v1/plantanalyses/async", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed_headers = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers
    assert r.headers.get("access-control-allow-credentials") != "true"
    assert "origin" in r.headers.get("vary", "").lower()  # caches keep origins apart


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://app.example.evil.example",  # suffix tricks
        "http://app.example",  # same host, other scheme
        "https://app.example:8443",  # other port
        "null",  # sandboxed iframes, file://
    ],
)
def test_preflight_refused_for_any_other_origin(client: TestClient, origin: str) -> None:
    r = client.options("/api/v1/plantanalyses/async", headers={"Origin": origin, **PREFLIGHT})
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers


def test_actual_requests_are_readable_only_by_listed_origins(client: TestClient) -> None:
    user = register(client)
    body = {"username": user.username, "password": user.password}
    ok = client.post("/api/v1/auth/login", json=body, headers={"Origin": ALLOWED})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    assert ok.headers.get("access-control-allow-credentials") != "true"
    assert "x-request-id" in ok.headers.get("access-control-expose-headers", "").lower()

    foreign = client.post(
        "/api/v1/auth/login", json=body, headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in foreign.headers  # the browser hides the answer


def test_without_an_allow_list_no_cross_origin_access(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(cors_origins=""))) as c:
        r = c.options("/api/v1/auth/login", headers={"Origin": ALLOWED, **PREFLIGHT})
        assert "access-control-allow-origin" not in r.headers
        r = c.get("/healthz", headers={"Origin": ALLOWED})
        assert "access-control-allow-origin" not in r.headers


def test_wildcard_in_development_never_comes_with_credentials(
    make_settings: SettingsFactory,
) -> None:
    with TestClient(create_app(make_settings(cors_origins="*"))) as c:
        r = c.options(
            "/api/v1/auth/login",
            headers={"Origin": "https://anything.example", **PREFLIGHT, "Cookie": "session=1"},
        )
        assert r.headers.get("access-control-allow-origin") in ("*", "https://anything.example")
        assert r.headers.get("access-control-allow-credentials") != "true"


def test_wildcard_refused_in_production(make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        make_settings(environment="production", cors_origins="*")
