"""The app as a whole: OpenAPI lists every route, request ids, CORS, the web app at ``/``."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from tests.support.api import SettingsFactory, User

EXPECTED_OPERATIONS = {
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/realtime/token"),
    ("post", "/api/v1/plantanalyses/async"),
    ("get", "/api/v1/plantanalyses"),
    ("get", "/api/v1/plantanalyses/{analysis_id}"),
    ("get", "/api/v1/plantanalyses/{analysis_id}/image"),
    ("get", "/api/v1/notifications"),
    ("post", "/api/v1/devices"),
    ("delete", "/api/v1/devices/{token}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}


def test_openapi_lists_every_route_with_its_answers(client: TestClient) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    operations = {(m, p) for p, item in schema["paths"].items() for m in item}
    assert operations >= EXPECTED_OPERATIONS
    paths = schema["paths"]
    upload = paths["/api/v1/plantanalyses/async"]["post"]
    assert {"202", "401", "413", "415", "422", "503"} <= set(upload["responses"])
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["image"] and "cropType" in form["properties"]
    assert set(paths["/api/v1/auth/register"]["post"]["responses"]) >= {"201", "409", "422"}
    assert paths["/api/v1/devices/{token}"]["delete"]["responses"].keys() >= {"204", "401"}
    # camelCase on the wire, as documented
    detail = schema["components"]["schemas"]["AnalysisOut"]["properties"]
    assert {"analysisId", "overallHealthScore", "imageUrl", "completedAt"} <= set(detail)
    assert "bearer" in str(schema["components"]["securitySchemes"]).lower()
    assert client.get("/docs").status_code == 200


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert made.headers["X-Request-ID"] != "bad id\twith spaces"
    assert len(made.headers["X-Request-ID"]) == 32


def test_cors_allows_only_listed_origins(make_settings: SettingsFactory, alice: User) -> None:
    app = create_app(make_settings(cors_origins="http://app.example:5173"))
    with TestClient(app) as c:
        ok = c.options(
            "/api/v1/plantanalyses",
            headers={
                "Origin": "http://app.example:5173",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "http://app.example:5173"
        assert "access-control-allow-credentials" not in ok.headers
        evil = c.get(
            "/api/v1/plantanalyses", headers={"Origin": "http://evil.example", **alice.headers}
        )
        assert "access-control-allow-origin" not in evil.headers


def test_unknown_api_paths_are_json_404(client: TestClient) -> None:
    r = client.get("/api/v1/nope")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_placeholder_page_without_a_built_web_app(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    with TestClient(create_app(make_settings(web_dist_dir=tmp_path / "missing"))) as c:
        r = c.get("/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert "make web" in r.text


def test_built_web_app_is_served_at_root(make_settings: SettingsFactory, tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>plantnotify web</title>")
    (tmp_path / "assets" / "app.js").write_text("console.log('hi')")
    with TestClient(create_app(make_settings(web_dist_dir=tmp_path))) as c:
        assert "plantnotify web" in c.get("/").text
        assert c.get("/assets/app.js").text == "console.log('hi')"
        assert "plantnotify web" in c.get("/analyses/123").text  # client-side route
        assert c.get("/assets/missing.js").status_code == 404
        assert c.get("/api/v1/nope").status_code == 404  # API paths never become the page
        assert c.get("/healthz").json() == {"status": "ok"}  # routes win over the mount
