"""Security headers (issue 14, finding 6: the web app at / sent no CSP, frame-ancestors or
nosniff; /docs loaded Swagger UI from a public CDN, also in production)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from api.security_headers import websocket_sources
from tests.support.api import SettingsFactory, User


def _common(headers: object) -> None:
    h = dict(headers)  # type: ignore[call-overload]
    assert h["x-content-type-options"] == "nosniff"
    assert h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in h["content-security-policy"]


def test_the_web_app_has_a_strict_csp(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    _common(r.headers)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "object-src 'none'" in csp and "base-uri 'none'" in csp
    settings = client.app.state.ctx.settings  # type: ignore[attr-defined]
    for source in websocket_sources(settings.mqtt_public_ws_url):
        assert source in csp  # the broker's WebSocket is reachable from the page


def test_api_answers_have_headers_too(client: TestClient, alice: User) -> None:
    for r in (
        client.get("/api/v1/plantanalyses"),  # 401
        client.get("/api/v1/plantanalyses", headers=alice.headers),
        client.get("/healthz"),
        client.get("/api/v1/plantanalyses/x%00y", headers=alice.headers),  # refused early
    ):
        _common(r.headers)
        assert r.headers["content-security-policy"].startswith("default-src 'none'")


def test_websocket_sources() -> None:
    assert websocket_sources("ws://127.0.0.1:9001/mqtt") == ["ws://127.0.0.1:9001", "ws://*:9001"]
    assert websocket_sources("wss://mqtt.example.com/mqtt") == ["wss://mqtt.example.com"]
    assert websocket_sources("not a url") == []


def test_docs_are_off_in_production(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(environment="production"))) as c:
        r = c.get("/docs")  # no Swagger UI (the web app's own page answers client routes)
        assert "swagger" not in r.text.lower() and "cdn.jsdelivr" not in r.text
        assert c.get("/api/v1/openapi.json").status_code == 200  # the schema stays


def test_docs_in_development_declare_their_cdn(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    assert "https://cdn.jsdelivr.net" in r.headers["content-security-policy"]
