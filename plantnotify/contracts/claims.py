"""JWT claim names and MQTT token minting (contract §2).

The Mosquitto plugin verifies what ``mint_mqtt_token`` produces; the API, the services, the CLI
and the tests all mint through this one function.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from plantnotify.contracts.ids import is_valid_user_id

CLAIM_SUBJECT = "sub"
CLAIM_EXPIRES = "exp"
CLAIM_ISSUED_AT = "iat"
CLAIM_NOT_BEFORE = "nbf"
CLAIM_AUDIENCE = "aud"
CLAIM_ISSUER = "iss"
CLAIM_ROLE = "role"
CLAIM_SESSION = "sid"  # the login session (refresh-token family) a token was issued under
ROLE_SERVICE = "service"

DEFAULT_MQTT_AUDIENCE = "plantnotify-mqtt"
SUPPORTED_ALGORITHMS = ("HS256", "RS256", "ES256")
MIN_HS256_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class MqttSigner:
    """How MQTT tokens are signed: algorithm and key (secret for HS256, private PEM otherwise)."""

    key: str | bytes
    algorithm: str = "HS256"
    audience: str = DEFAULT_MQTT_AUDIENCE
    issuer: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"unsupported MQTT token algorithm {self.algorithm!r}")
        if self.algorithm == "HS256" and len(self.key) < MIN_HS256_SECRET_BYTES:
            raise ValueError(f"the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes")


def mint_mqtt_token(
    signer: MqttSigner,
    user_id: str,
    ttl_seconds: int,
    *,
    service: bool = False,
    session_id: str | None = None,
    now: int | None = None,
) -> str:
    """A token whose ``sub`` is ``user_id``; the MQTT username must be that same user id."""
    if not is_valid_user_id(user_id):
        raise ValueError(f"invalid user id {user_id!r}: must match [A-Za-z0-9_-]{{1,64}}")
    if ttl_seconds <= 0:
        raise ValueError("ttl must be positive")
    issued = int(time.time()) if now is None else now
    claims: dict[str, object] = {
        CLAIM_SUBJECT: user_id,
        CLAIM_ISSUED_AT: issued,
        CLAIM_EXPIRES: issued + ttl_seconds,
        CLAIM_AUDIENCE: signer.audience,
    }
    if signer.issuer:
        claims[CLAIM_ISSUER] = signer.issuer
    if service:
        claims[CLAIM_ROLE] = ROLE_SERVICE
    if session_id:
        claims[CLAIM_SESSION] = session_id
    return jwt.encode(claims, signer.key, algorithm=signer.algorithm)


# API access tokens issued by ``POST /auth/login`` carry their own audience and issuer, so an
# MQTT token (same HS256 secret by default, audience ``plantnotify-mqtt``) is never accepted
# as an API access token, nor the other way round (RFC 8725 §3.12, cross-JWT confusion).
ACCESS_TOKEN_AUDIENCE = "plantnotify-api"  # noqa: S105 (a name, not a secret)
ACCESS_TOKEN_ISSUER = "plantnotify"  # noqa: S105
