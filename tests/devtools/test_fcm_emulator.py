"""The FCM emulator over raw HTTP: it must refuse what FCM refuses, with FCM's error bodies."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.fcm_emulator import FCM_ERROR_TYPE, FcmEmulator

PATH = "/v1/projects/p1/messages:send"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _assertion(iss: str = "svc@p1.iam.gserviceaccount.com", alg: str = "RS256") -> str:
    key: Any = KEY
    if alg == "HS256":
        key = "k" * 32
    claims = {
        "iss": iss,
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": "https://oauth2.googleapis.com/token",
        "iat": 0,
        "exp": 4_000_000_000,
    }
    return jwt.encode(claims, key, algorithm=alg)


def _token(client: httpx.Client, **kw: str) -> httpx.Response:
    return client.post(
        "/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": _assertion(**kw),
        },
    )


@pytest.fixture
def client(fcm_emulator: FcmEmulator) -> httpx.Client:
    with httpx.Client(base_url=fcm_emulator.url, timeout=5) as c:
        yield c  # type: ignore[misc]


@pytest.fixture
def auth(client: httpx.Client) -> dict[str, str]:
    r = _token(client)
    assert r.status_code == 200
    body = r.json()
    assert body["expires_in"] == 3600 and body["token_type"] == "Bearer"
    return {"Authorization": f"Bearer {body['access_token']}"}


def test_token_endpoint_refuses_bad_grants(client: httpx.Client) -> None:
    assert client.post("/token", data={"grant_type": "password"}).status_code == 400
    assert (
        client.post(
            "/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": "x.y.z",
            },
        ).json()["error"]
        == "invalid_grant"
    )
    assert _token(client, alg="HS256").status_code == 400
    revoked = _token(client, iss="revoked-svc@p1.iam.gserviceaccount.com")
    assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc"])
def test_send_requires_a_token_from_the_token_endpoint(
    client: httpx.Client, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.post(PATH, json={"message": {"token": "t"}}, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"token": "a", "topic": "b"},
        {"token": ""},
        {"token": "t", "data": {"n": 1}},
        {"token": "t", "data": {"from": "x"}},
        {"token": "t", "data": {"google.x": "x"}},
        {"token": "t", "data": ["x"]},
        {"token": "t", "android": {"priority": "urgent"}},
        {"token": "t", "android": {"ttl": "3600"}},
        {"token": "t", "android": {"ttl": "9999999s"}},
        {"token": "t", "apns": {"headers": {"apns-priority": "7"}}},
        {"token": "t", "apns": {"headers": {"apns-collapse-id": "x" * 65}}},
        {"token": "t", "webpush": {"fcm_options": {"link": "http://insecure"}}},
        {"token": "t", "data": {"pad": "x" * 5000}},
        {"token": "t", "notification": {"title": 5}},
    ],
)
def test_invalid_messages_get_invalid_argument(
    client: httpx.Client, auth: dict[str, str], fcm_emulator: FcmEmulator, message: dict[str, Any]
) -> None:
    before = len(fcm_emulator.deliveries())
    r = client.post(PATH, json={"message": message}, headers=auth)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert len(fcm_emulator.deliveries()) == before


def test_garbage_bodies(client: httpx.Client, auth: dict[str, str]) -> None:
    assert client.post(PATH, content=b"{not json", headers=auth).status_code == 400
    assert client.post(PATH, content=b"x" * 70_000, headers=auth).status_code == 413
    assert client.post("/v1/projects/p1/messages:nope", json={}, headers=auth).status_code == 404


def test_scripted_tokens_and_listing(client: httpx.Client, auth: dict[str, str]) -> None:
    dead = "dead-" + secrets.token_hex(4)
    r = client.post(PATH, json={"message": {"token": dead}}, headers=auth)
    assert r.status_code == 404
    assert r.json()["error"]["details"] == [{"@type": FCM_ERROR_TYPE, "errorCode": "UNREGISTERED"}]
    quota = "quota-" + secrets.token_hex(4)
    first = client.post(PATH, json={"message": {"token": quota}}, headers=auth)
    assert first.status_code == 429 and first.headers["Retry-After"] == "1"
    second = client.post(PATH, json={"message": {"token": quota, "data": {"k": "v"}}}, headers=auth)
    assert second.status_code == 200 and second.json()["name"].startswith("projects/p1/messages/")
    listed = client.get("/messages", params={"token": quota}).json()
    assert [m["message"]["data"] for m in listed] == [{"k": "v"}]
    assert [a["status"] for a in client.get("/attempts").json() if a.get("token") == quota] == [
        429,
        200,
    ]
    page = client.get("/")
    assert page.status_code == 200 and "FCM emulator" in page.text and quota[:24] in page.text


def test_validate_only_is_not_delivered(client: httpx.Client, auth: dict[str, str]) -> None:
    token = "ok-" + secrets.token_hex(4)
    r = client.post(PATH, json={"message": {"token": token}, "validate_only": True}, headers=auth)
    assert r.json()["name"] == "projects/p1/messages/fake_message_id"
    assert client.get("/messages", params={"token": token}).json() == []


def test_page_escapes_html(client: httpx.Client, auth: dict[str, str]) -> None:
    token = "<script>x" + secrets.token_hex(2)
    client.post(
        PATH,
        json={"message": {"token": token, "notification": {"title": "<b>t</b>"}}},
        headers=auth,
    )
    page = client.get("/").text
    assert "<script>x" not in page and "&lt;b&gt;t&lt;/b&gt;" in page
