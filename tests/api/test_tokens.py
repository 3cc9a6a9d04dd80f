"""An external identity provider's tokens (RS256, custom user-id claim), attacked; and broken
identity-provider configurations refused at start-up."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import AccessTokens
from plantnotify.settings import ConfigError
from tests.support.api import SettingsFactory, image_bytes, register

ISSUER = "https://idp.example"
AUDIENCE = "plant-app"


def _private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def idp_key() -> rsa.RSAPrivateKey:
    return _private_key()


@pytest.fixture(scope="module")
def idp_public_pem(idp_key: rsa.RSAPrivateKey) -> bytes:
    return idp_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def idp_client(
    make_settings: SettingsFactory, idp_public_pem: bytes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    key_file = tmp_path_factory.mktemp("idp") / "idp.pub.pem"
    key_file.write_bytes(idp_public_pem)
    settings = make_settings(
        auth_jwt_algorithm="RS256",
        auth_jwt_public_key_file=key_file,
        auth_jwt_issuer=ISSUER,
        auth_jwt_audience=AUDIENCE,
        auth_user_id_claim="userId",
    )
    with TestClient(create_app(settings)) as c:
        yield c


def idp_token(key: rsa.RSAPrivateKey, **overrides: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "auth0|abc",  # not the user id: the configured claim is
        "userId": "42",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_idp_token_works_without_a_users_row(
    idp_client: TestClient, idp_key: rsa.RSAPrivateKey
) -> None:
    headers = bearer(idp_token(idp_key))
    r = idp_client.post("/api/v1/realtime/token", headers=headers)
    assert r.status_code == 200
    assert r.json()["username"] == "42"
    assert jwt.decode(r.json()["token"], options={"verify_signature": False})["sub"] == "42"
    up = idp_client.post(
        "/api/v1/plantanalyses/async",
        headers=headers,
        files={"image": ("a.png", image_bytes("PNG"), "image/png")},
    )
    assert up.status_code == 202
    listed = idp_client.get("/api/v1/plantanalyses", headers=headers).json()
    assert [a["analysisId"] for a in listed] == [up.json()["analysisId"]]
    # a numeric user id claim is the same user
    numeric = bearer(idp_token(idp_key, userId=42))
    assert idp_client.get("/api/v1/plantanalyses", headers=numeric).json() == listed


def test_local_accounts_keep_working_next_to_the_idp(idp_client: TestClient) -> None:
    user = register(idp_client)
    assert idp_client.get("/api/v1/plantanalyses", headers=user.headers).status_code == 200


def test_idp_attack_tokens_are_401(
    idp_client: TestClient, idp_key: rsa.RSAPrivateKey, idp_public_pem: bytes
) -> None:
    now = int(time.time())
    header_none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = (
        base64.urlsafe_b64encode(
            json.dumps({"userId": "42", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600}).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    # HS256 "signed" with the public key: the classic algorithm-confusion forgery
    import hashlib
    import hmac

    signing_input = (
        base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
        + "."
        + payload
    )
    confused = (
        signing_input
        + "."
        + base64.urlsafe_b64encode(
            hmac.new(idp_public_pem, signing_input.encode(), hashlib.sha256).digest()
        )
        .rstrip(b"=")
        .decode()
    )
    attacks = {
        "other key": idp_token(_private_key()),
        "alg none": f"{header_none}.{payload}.",
        "hs256 with public key": confused,
        "expired": idp_token(idp_key, exp=now - 3600, iat=now - 7200),
        "wrong issuer": idp_token(idp_key, iss="https://evil.example"),
        "wrong audience": idp_token(idp_key, aud="someone-else"),
        "no audience": idp_token(idp_key, aud=None),
        "no user id claim": idp_token(idp_key, userId=None),
        "user id with slash": idp_token(idp_key, userId="42/../43"),
        "user id wildcard": idp_token(idp_key, userId="#"),
        "user id too long": idp_token(idp_key, userId="x" * 65),
        "user id object": idp_token(idp_key, userId={"id": "42"}),
        "user id bool": idp_token(idp_key, userId=True),
    }
    for name, token in attacks.items():
        r = idp_client.get("/api/v1/plantanalyses", headers=bearer(token))
        assert r.status_code == 401, name


def test_broken_idp_configuration_is_refused(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="AUTH_JWT_PUBLIC_KEY_FILE"):
        AccessTokens(make_settings(auth_jwt_algorithm="RS256"))
    with pytest.raises(ConfigError, match="AUTH_JWT_PUBLIC_KEY_FILE"):
        AccessTokens(
            make_settings(
                auth_jwt_algorithm="RS256", auth_jwt_public_key_file=tmp_path / "nope.pem"
            )
        )
    key = tmp_path / "k.pem"
    key.write_text("x")
    with pytest.raises(ConfigError, match="AUTH_JWT_ALGORITHM"):
        AccessTokens(make_settings(auth_jwt_public_key_file=key))
    with pytest.raises(ConfigError, match="AUTH_JWT_SECRET"):
        AccessTokens(make_settings(auth_jwt_secret="short"))
    with pytest.raises(ConfigError, match="MQTT_AUDIENCE"):
        AccessTokens(make_settings(auth_jwt_audience="plantnotify-mqtt"))


def test_shared_secret_idp_with_custom_claim(make_settings: SettingsFactory) -> None:
    secret = "idp-shared-secret-" + "s" * 32
    settings = make_settings(auth_jwt_secret=secret, auth_user_id_claim="userId")
    tokens = AccessTokens(settings)
    now = int(time.time())
    good = jwt.encode({"userId": "farmer_7", "exp": now + 60}, secret, "HS256")
    assert tokens.verify(good).user_id == "farmer_7"
    assert tokens.verify(good).source == "external"
    # an MQTT token signed with JWT_SECRET is neither a local nor an external access token
    from api.tokens import InvalidToken
    from plantnotify.contracts.claims import mint_mqtt_token

    with pytest.raises(InvalidToken):
        tokens.verify(mint_mqtt_token(settings.mqtt_signer, "farmer_7", 60))
