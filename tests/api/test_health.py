"""/healthz, /readyz (really checks PostgreSQL, RabbitMQ and our Mosquitto) and /metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from tests.support.api import SettingsFactory
from tests.support.net import free_port


def test_healthz(client: TestClient) -> None:
    for path in ("/healthz", "/api/v1/healthz"):
        r = client.get(path)
        assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_ready_when_every_dependency_answers(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "checks": {"database": "ok", "rabbitmq": "ok", "mqtt": "ok"},
    }


def test_not_ready_when_any_dependency_is_down(make_settings: SettingsFactory) -> None:
    closed = free_port()
    cases = {
        "database": {"database_url": f"postgresql+psycopg2://postgres@127.0.0.1:{closed}/x"},
        "rabbitmq": {"rabbitmq_url": f"amqp://guest:guest@127.0.0.1:{closed}/%2F"},
        "mqtt": {"mqtt_port": closed},
    }
    for down, overrides in cases.items():
        with TestClient(create_app(make_settings(**overrides))) as c:
            r = c.get("/readyz")
            assert r.status_code == 503, down
            body = r.json()
            assert body["status"] == "unavailable"
            assert body["checks"][down] != "ok", down
            assert all(v == "ok" for k, v in body["checks"].items() if k != down), body
            assert c.get("/healthz").status_code == 200  # alive, just not ready


def test_metrics_are_prometheus_text_with_request_latency(client: TestClient) -> None:
    client.get("/healthz")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE plantnotify_api_uploads_total counter" in text
    assert "# TYPE plantnotify_api_request_duration_seconds histogram" in text
    # labelled by route template, never by raw path (bounded cardinality)
    assert 'route="/healthz"' in text
    client.get("/api/v1/plantanalyses/some-id")
    text = client.get("/metrics").text
    assert 'route="/api/v1/plantanalyses/{analysis_id}"' in text
    assert "some-id" not in text


def test_database_down_is_503_not_500(make_settings: SettingsFactory) -> None:
    down = make_settings(database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x")
    with TestClient(create_app(down), raise_server_exceptions=False) as c:
        r = c.post("/api/v1/auth/login", json={"username": "someone", "password": "whatever"})
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "30"
        assert "database" in r.json()["detail"]
