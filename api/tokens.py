"""API access tokens: issued at login, verified on every request.

Two verifiers, each pinned to one algorithm and key (RFC 8725 §3.1):

- **local**: HS256 with ``JWT_SECRET``; ``aud``/``iss`` fixed to ``ACCESS_TOKEN_AUDIENCE`` /
  ``ACCESS_TOKEN_ISSUER``; the user id is ``sub``. ``POST /auth/login`` issues these.
- **external** (optional): an identity provider's tokens, enabled by any ``AUTH_JWT_*`` /
  ``AUTH_USER_ID_CLAIM`` setting: ``AUTH_JWT_ALGORITHM`` with ``AUTH_JWT_PUBLIC_KEY_FILE``
  (RS*/ES*/PS*) or ``AUTH_JWT_SECRET`` (HS*, default ``JWT_SECRET``), ``AUTH_JWT_ISSUER`` and
  ``AUTH_JWT_AUDIENCE`` checked when set (a token carrying an ``aud`` is refused unless the
  audience is configured), the user id read from ``AUTH_USER_ID_CLAIM``. Such users need no
  ``users`` row.

Local tokens name their login session (``sid``): a revoked session's tokens are refused
(``api/accounts.py``). Every token needs ``exp``; the user id must match the contract's user id rule, because it
becomes an MQTT username and a topic level.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt

from plantnotify.contracts.claims import (
    ACCESS_TOKEN_AUDIENCE,
    ACCESS_TOKEN_ISSUER,
    CLAIM_AUDIENCE,
    CLAIM_EXPIRES,
    CLAIM_ISSUED_AT,
    CLAIM_ISSUER,
    CLAIM_SESSION,
    CLAIM_SUBJECT,
    MIN_HS256_SECRET_BYTES,
)
from plantnotify.contracts.ids import is_valid_user_id
from plantnotify.settings import ConfigError, Settings

MAX_TOKEN_BYTES = 8192
_SID = re.compile(r"[0-9a-f]{32}")
LEEWAY_SECONDS = 30
_HMAC = ("HS256", "HS384", "HS512")
_ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class InvalidToken(Exception):
    """The bearer token is missing, malformed, forged, expired or for someone else."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user id, when their access token expires and was issued (unix
    seconds), and the login session it belongs to (local tokens)."""

    user_id: str
    expires_at: int
    source: Literal["local", "external"]
    issued_at: int | None = None
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Verifier:
    source: Literal["local", "external"]
    algorithm: str
    key: str | bytes
    user_id_claim: str
    audience: str | None
    issuer: str | None

    def verify(self, token: str) -> Principal:
        claims: dict[str, Any] = jwt.decode(
            token,
            self.key,
            algorithms=[self.algorithm],
            audience=self.audience,
            issuer=self.issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": [CLAIM_EXPIRES, self.user_id_claim]},
        )
        raw = claims.get(self.user_id_claim)
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)  # identity providers with numeric user ids (e.g. 42)
        if not isinstance(raw, str) or not is_valid_user_id(raw):
            raise InvalidToken("the token's user id is not a valid user id")
        issued = claims.get(CLAIM_ISSUED_AT)
        sid = claims.get(CLAIM_SESSION) if self.source == "local" else None
        if self.source == "local" and not (isinstance(sid, str) and _SID.fullmatch(sid)):
            raise InvalidToken("the access token names no login session")
        return Principal(
            user_id=raw,
            expires_at=int(claims[CLAIM_EXPIRES]),
            source=self.source,
            issued_at=int(issued) if isinstance(issued, int | float) else None,
            session_id=sid,
        )


class AccessTokens:
    """Issues local access tokens and verifies local and (when configured) external ones."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self.ttl_seconds = settings.access_token_ttl_seconds
        self._verifiers: list[_Verifier] = [
            _Verifier(
                source="local",
                algorithm="HS256",
                key=settings.jwt_secret,
                user_id_claim=CLAIM_SUBJECT,
                audience=ACCESS_TOKEN_AUDIENCE,
                issuer=ACCESS_TOKEN_ISSUER,
            )
        ]
        external = _external_verifier(settings)
        if external is not None:
            self._verifiers.append(external)

    def issue(self, user_id: str, session_id: str, *, now: int | None = None) -> str:
        issued = int(time.time()) if now is None else now
        claims = {
            CLAIM_SUBJECT: user_id,
            CLAIM_SESSION: session_id,
            CLAIM_ISSUED_AT: issued,
            CLAIM_EXPIRES: issued + self.ttl_seconds,
            CLAIM_AUDIENCE: ACCESS_TOKEN_AUDIENCE,
            CLAIM_ISSUER: ACCESS_TOKEN_ISSUER,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("the access token is empty or too long")
        for verifier in self._verifiers:
            try:
                return verifier.verify(token)
            except jwt.PyJWTError:
                continue
        raise InvalidToken("the access token is invalid or expired")


def _external_verifier(settings: Settings) -> _Verifier | None:
    configured = (
        settings.auth_jwt_public_key_file is not None
        or settings.auth_jwt_secret is not None
        or settings.auth_jwt_issuer is not None
        or settings.auth_jwt_audience is not None
        or settings.auth_user_id_claim != CLAIM_SUBJECT
        or settings.auth_jwt_algorithm != "HS256"
    )
    if not configured:
        return None
    algorithm = settings.auth_jwt_algorithm
    key: str | bytes
    if algorithm in _ASYMMETRIC:
        if settings.auth_jwt_public_key_file is None:
            raise ConfigError(
                f"AUTH_JWT_ALGORITHM={algorithm} needs AUTH_JWT_PUBLIC_KEY_FILE "
                "(the identity provider's PEM public key)"
            )
        key = _read_key(settings.auth_jwt_public_key_file)
    elif algorithm in _HMAC:
        if settings.auth_jwt_public_key_file is not None:
            raise ConfigError(
                "AUTH_JWT_PUBLIC_KEY_FILE is set but AUTH_JWT_ALGORITHM is "
                f"{algorithm}; set AUTH_JWT_ALGORITHM to the key's algorithm (e.g. RS256)"
            )
        key = settings.auth_jwt_secret or settings.jwt_secret
        if len(key) < MIN_HS256_SECRET_BYTES:
            raise ConfigError(f"AUTH_JWT_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes")
    else:
        raise ConfigError(
            f"AUTH_JWT_ALGORITHM={algorithm!r} is not supported; use one of "
            + ", ".join(_HMAC + _ASYMMETRIC)
        )
    if settings.auth_jwt_audience and settings.auth_jwt_audience == settings.mqtt_audience:
        raise ConfigError(
            "AUTH_JWT_AUDIENCE must differ from MQTT_AUDIENCE, or MQTT tokens would be "
            "accepted as API access tokens"
        )
    claim = settings.auth_user_id_claim.strip()
    if not claim:
        raise ConfigError("AUTH_USER_ID_CLAIM must name a claim, e.g. `sub` or `userId`")
    return _Verifier(
        source="external",
        algorithm=algorithm,
        key=key,
        user_id_claim=claim,
        audience=settings.auth_jwt_audience,
        issuer=settings.auth_jwt_issuer,
    )


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read AUTH_JWT_PUBLIC_KEY_FILE {path}: {exc.strerror}") from None
