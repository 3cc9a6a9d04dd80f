"""Our MQTT CONNECT rules, as the Mosquitto plugin applies them (contract §2).

``check_connect(config, username, client_id, password, now)`` returns the accepted claims or
raises :class:`Refused` naming the rule that fired. The order and the rules follow
``mosquitto/plugin/token.c``: size, header (alg pinned, no key-fetching or critical headers,
``typ`` JWT if present), signature, duplicate claims, exp (required integer) / nbf / iat with
leeway, audience, issuer, role, ``sid`` shape, ``sub`` shape, ``username == sub``, client id ``{sub}`` or
``{sub}-…``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt

from plantnotify.contracts.claims import CLAIM_SESSION, ROLE_SERVICE
from plantnotify.contracts.ids import is_valid_user_id
from plantnotify.settings import Settings

REFUSED_HEADERS = ("crit", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256")
MAX_TOKEN_BYTES = 4096


class Refused(Exception):
    """The CONNECT is refused; ``outcome`` is the metrics label, the message the rule."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass(frozen=True)
class TokenConfig:
    key: str | bytes  # HS256 secret or the PEM public key
    algorithm: str
    audience: str
    issuer: str | None
    leeway: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenConfig:
        if settings.mqtt_jwt_algorithm == "HS256":
            key: str | bytes = settings.jwt_secret
        else:
            if settings.mqtt_jwt_public_key_file is None:
                raise ValueError(
                    f"MQTT_JWT_ALGORITHM={settings.mqtt_jwt_algorithm} needs "
                    "MQTT_JWT_PUBLIC_KEY_FILE"
                )
            key = settings.mqtt_jwt_public_key_file.read_bytes()
        return cls(
            key=key,
            algorithm=settings.mqtt_jwt_algorithm,
            audience=settings.mqtt_audience,
            issuer=settings.mqtt_issuer,
            leeway=settings.mqtt_leeway_seconds,
        )


@dataclass(frozen=True)
class Accepted:
    sub: str
    client_id: str
    expires: int
    service: bool
    sid: str | None = None  # the login session the token was issued under
    iat: int | None = None  # None: the token has no iat (a user revocation refuses it)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise Refused("invalid_token", "duplicate JSON key")
        out[k] = v
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_token(cfg: TokenConfig, token: str, now: float | None = None) -> dict[str, Any]:
    """The verified claims of ``token``; :class:`Refused` otherwise."""
    t = int(time.time() if now is None else now)
    if not token or len(token) > MAX_TOKEN_BYTES:
        raise Refused("invalid_token", "token missing or too large")
    if not _COMPACT.fullmatch(token):
        raise Refused("invalid_token", "malformed token")  # base64url without padding only
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Refused("invalid_token", "malformed token") from None
    if header.get("alg") != cfg.algorithm:
        raise Refused("invalid_token", "algorithm is not the configured one")
    if any(h in header for h in REFUSED_HEADERS):
        raise Refused("invalid_token", "refused header (typ/crit/jku/jwk/x5u/x5c)")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
        raise Refused("invalid_token", "refused header (typ/crit/jku/jwk/x5u/x5c)")
    try:
        decoded = jwt.api_jws.decode_complete(
            token, cfg.key, algorithms=[cfg.algorithm], options={"verify_signature": True}
        )
    except jwt.PyJWTError:
        raise Refused("invalid_token", "bad signature") from None
    try:
        claims = json.loads(decoded["payload"], object_pairs_hook=_no_duplicates)
    except ValueError:
        raise Refused("invalid_token", "malformed claims") from None
    if not isinstance(claims, dict):
        raise Refused("invalid_token", "malformed claims")
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise Refused("invalid_token", "exp missing")
    if t - cfg.leeway >= exp:
        raise Refused("expired", "token expired")
    if nbf is not None and (not _is_int(nbf) or nbf > t + cfg.leeway):
        raise Refused("invalid_token", "nbf in the future or invalid")
    if iat is not None and (not _is_int(iat) or iat > t + cfg.leeway):
        raise Refused("invalid_token", "iat in the future or invalid")
    if claims.get("aud") != cfg.audience:
        raise Refused("invalid_token", "wrong audience")
    if cfg.issuer is not None and claims.get("iss") != cfg.issuer:
        raise Refused("invalid_token", "wrong issuer")
    role = claims.get("role")
    if role is not None and role not in (ROLE_SERVICE, "user"):
        raise Refused("invalid_token", "unknown role")
    sid = claims.get(CLAIM_SESSION)
    if sid is not None and (not isinstance(sid, str) or not is_valid_user_id(sid)):
        raise Refused("invalid_token", "invalid sid")  # the plugin: "unknown role or invalid sid"
    sub = claims.get("sub")
    if not isinstance(sub, str) or not is_valid_user_id(sub):
        raise Refused("identity", "sub is not a valid user id")
    return claims


_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_SUFFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def client_id_allowed(sub: str, client_id: str) -> bool:
    """``{sub}`` or ``{sub}-<1..64 of [A-Za-z0-9_.:-]>`` (the plugin's pn_valid_client_id)."""
    if client_id == sub:
        return True
    prefix = f"{sub}-"
    return client_id.startswith(prefix) and bool(_SUFFIX.fullmatch(client_id[len(prefix) :]))


def check_connect(
    cfg: TokenConfig, username: str, client_id: str, password: str, now: float | None = None
) -> Accepted:
    claims = check_token(cfg, password, now)
    sub = claims["sub"]
    if username != sub:
        raise Refused("identity", "username is not the token's sub")
    if not client_id_allowed(sub, client_id):
        raise Refused("identity", "client id is not the user id or <userId>-…")
    iat = claims.get("iat")
    return Accepted(
        sub,
        client_id,
        int(claims["exp"]),
        claims.get("role") == ROLE_SERVICE,
        sid=claims.get(CLAIM_SESSION),
        iat=iat if _is_int(iat) else None,
    )
