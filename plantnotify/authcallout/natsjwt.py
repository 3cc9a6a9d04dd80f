"""The nkey-signed JWTs of the NATS auth-callout protocol (nats-io/jwt v2 claims).

The server sends an ``authorization_request`` JWT signed with its server nkey; we answer with an
``authorization_response`` JWT signed with the issuer account key, which carries a ``user`` JWT
(also signed by the issuer) naming the account, the permissions and the expiry. Header:
``{"typ":"JWT","alg":"ed25519-nkey"}``; signature: ed25519 over ``header.payload``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class BadRequest(ValueError):
    """A callout request that is not a valid, server-signed authorization request."""


def _verify_key(public: str) -> nacl.signing.VerifyKey:
    """The ed25519 key inside an encoded nkey public key (prefix byte, 32 bytes, crc16)."""
    raw = base64.b32decode(public + "=" * (-len(public) % 8))
    if len(raw) != 35:
        raise ValueError("not an nkey public key")
    return nacl.signing.VerifyKey(raw[1:33])


def encode(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    body = dict(claims)
    body.setdefault("iat", int(time.time()))
    body["iss"] = signer.public_key.decode()
    body.pop("jti", None)
    # jti: a hash of the claims, as the Go library computes it (an id, not checked by servers).
    digest = hashlib.sha512(json.dumps(body, separators=(",", ":")).encode()).digest()[:32]
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = (
        f"{_b64(json.dumps(HEADER, separators=(',', ':')).encode())}."
        f"{_b64(json.dumps(body, separators=(',', ':')).encode())}"
    )
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def decode_request(token: str) -> dict[str, Any]:
    """The claims of a callout request, after checking its server signature."""
    try:
        head_b64, body_b64, sig_b64 = token.split(".")
        header = json.loads(_unb64(head_b64))
        claims = json.loads(_unb64(body_b64))
        sig = _unb64(sig_b64)
    except ValueError as exc:
        raise BadRequest(f"malformed request: {exc}") from None
    if not isinstance(header, dict) or header.get("alg") != HEADER["alg"]:
        raise BadRequest("request is not an nkey-signed JWT")
    if not isinstance(claims, dict):
        raise BadRequest("request claims are not an object")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer.startswith("N"):
        raise BadRequest("request is not signed by a server key")
    try:
        _verify_key(issuer).verify(f"{head_b64}.{body_b64}".encode(), sig)
    except (ValueError, nacl.exceptions.BadSignatureError):
        raise BadRequest("request signature does not verify") from None
    nats = claims.get("nats")
    if not isinstance(nats, dict) or nats.get("type") != "authorization_request":
        raise BadRequest("not an authorization request")
    return claims


def user_jwt(
    issuer: nkeys.KeyPair,
    user_nkey: str,
    *,
    name: str,
    account: str,
    expires: int | None,
    pub_allow: list[str] | None,
    sub_allow: list[str] | None,
) -> str:
    """A user JWT for ``user_nkey`` in ``account``; ``None`` permissions: everything."""
    perms: dict[str, Any] = {}
    if pub_allow is not None:
        perms["pub"] = {"allow": pub_allow}
    if sub_allow is not None:
        perms["sub"] = {"allow": sub_allow}
    claims: dict[str, Any] = {
        "sub": user_nkey,
        "name": name,
        "aud": account,
        "nats": {
            **perms,
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        },
    }
    if expires is not None:
        claims["exp"] = expires
    return encode(claims, issuer)


def response(
    issuer: nkeys.KeyPair,
    *,
    user_nkey: str,
    server_id: str,
    user_token: str | None = None,
    error: str | None = None,
) -> str:
    """An authorization response: the user JWT, or an error (the connection is refused)."""
    nats: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if user_token:
        nats["jwt"] = user_token
    if error:
        nats["error"] = error
    return encode({"sub": user_nkey, "aud": server_id, "nats": nats}, issuer)
