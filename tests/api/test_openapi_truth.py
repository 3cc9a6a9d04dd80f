"""The OpenAPI document tells the truth about errors (issue 14, finding 7: 422 bodies did not
match the declared HTTPValidationError, malformed bodies answered an undocumented 400, a GET
on a POST-only route answered 404 and OPTIONS 405 with `Allow: GET, HEAD`)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.api import User

REF_422 = "#/components/schemas/ValidationErrorResponse"


def test_wrong_methods_on_api_paths_are_405_with_allow(client: TestClient) -> None:
    for method, url, allow in [
        ("GET", "/api/v1/auth/login", "POST"),
        ("OPTIONS", "/api/v1/auth/login", "POST"),
        ("PUT", "/api/v1/plantanalyses/some-id", "GET, HEAD"),
        ("PATCH", "/api/v1/devices/tok", "DELETE"),
        ("POST", "/healthz", "GET, HEAD"),
    ]:
        r = client.request(method, url)
        assert r.status_code == 405, (method, url, r.status_code)
        assert r.headers["allow"] == allow
        assert "not allowed" in r.json()["detail"]


def test_every_422_is_documented_as_what_is_sent(client: TestClient, alice: User) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["ValidationErrorResponse"]["required"] == ["detail"]
    assert "errors" in schemas["ValidationErrorResponse"]["properties"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert ("400" in responses and "503" in responses) or path.endswith(
                ("/healthz", "/metrics")
            ), (method, path)
            if "422" in responses:
                content = responses["422"]["content"]["application/json"]["schema"]
                assert content == {"$ref": REF_422}, (method, path)
            for code, response in responses.items():
                if code.startswith(("4", "5")) and code != "422":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, code)
    r = client.get("/api/v1/plantanalyses?limit=abc", headers=alice.headers)
    assert r.status_code == 422 and set(r.json()) == {"detail", "errors"}


def test_a_malformed_multipart_body_is_a_documented_400(client: TestClient, alice: User) -> None:
    r = client.post(
        "/api/v1/plantanalyses/async",
        headers={**alice.headers, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=b"--xyz\r\nthis is not a part\r\n",
    )
    assert r.status_code in (400, 422), r.text
    op = client.get("/api/v1/openapi.json").json()["paths"]["/api/v1/plantanalyses/async"]
    assert str(r.status_code) in op["post"]["responses"]
