"""Every route refuses NUL and other invalid characters with a 4xx in the documented error
format (issue 14, finding 5: a NUL in the login username or in an analysis id in the path gave
a bare text/plain 500 without a request id).

The walk covers every API route of the app: NUL, other control characters and broken UTF-8
in each path parameter, in each query parameter, and in each string field of JSON bodies."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.testclient import TestClient

from tests.support.api import User, image_bytes

BAD_URL_TEXT = ["ab%00cd", "%00", "a%01b", "a%7Fb", "%FF%FE", "%C3%28", "%ED%A0%80"]
BAD_BODY_TEXT = ["ab\x00cd", "\x00", "a\ud800b"]


def _check(r: Any, what: str) -> None:
    assert 400 <= r.status_code < 500, f"{what}: {r.status_code} {r.text[:200]}"
    assert r.headers["content-type"].startswith("application/json"), what
    body = r.json()
    assert isinstance(body.get("detail"), str) and body["detail"], what
    assert r.headers.get("x-request-id"), what


def _operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every documented route, from the app's own schema."""
    spec = client.get("/api/v1/openapi.json").json()
    ops = [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(ops) >= 15
    return ops


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def test_every_route_refuses_bad_text_in_the_url(client: TestClient, alice: User) -> None:
    checked = 0
    for method, path, op in _operations(client):
        params = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        for bad in BAD_URL_TEXT:
            if "{" in path:
                url = _fill(path, bad)
                r = client.request(method, url, headers=alice.headers)
                _check(r, f"{method} {url}")
                checked += 1
            for name in params or ["q"]:
                url = _fill(path, "x") + f"?{name}={bad}"
                r = client.request(method, url, headers=alice.headers)
                _check(r, f"{method} {url}")
                checked += 1
    assert checked > 100


def _json_fields(client: TestClient, op: dict[str, Any]) -> list[str]:
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if not schema:
        return []
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = client.get("/api/v1/openapi.json").json()["components"]["schemas"][name]
    return list(schema.get("properties", {}))


def test_every_json_body_refuses_nul_and_surrogates(client: TestClient, alice: User) -> None:
    checked = 0
    for method, path, op in _operations(client):
        fields = _json_fields(client, op)
        for field in fields:
            for bad in BAD_BODY_TEXT:
                body = {f: "valid-text-1234567" for f in fields}
                body[field] = bad
                url = _fill(path, "x")
                r = client.request(
                    method,
                    url,
                    content=json.dumps(body),  # ASCII: a lone surrogate travels as \\ud800
                    headers={**alice.headers, "Content-Type": "application/json"},
                )
                _check(r, f"{method} {url} {field}={bad!r}")
                checked += 1
    assert checked >= 20


def test_the_reported_cases(client: TestClient, alice: User) -> None:
    r = client.post("/api/v1/auth/login", json={"username": "ab\x00cd", "password": "x"})
    _check(r, "login NUL")
    assert r.status_code == 422
    for url in ("/api/v1/plantanalyses/ab%00cd", "/api/v1/plantanalyses/ab%00cd/image"):
        r = client.get(url, headers=alice.headers)
        _check(r, url)
        assert r.status_code == 400
    r = client.post(
        "/api/v1/plantanalyses/async",
        headers=alice.headers,
        files={"image": ("leaf.jpg", image_bytes(), "image/jpeg")},
        data={"cropType": "to\x00mato"},
    )
    _check(r, "cropType NUL")
    assert r.status_code == 422
