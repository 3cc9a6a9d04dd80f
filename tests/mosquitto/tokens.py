"""Hand-made JWTs for attacking the broker: anything a real signer would never produce."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt

AUD = "plantnotify-mqtt"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _part(value: dict[str, Any] | str | bytes) -> str:
    if isinstance(value, dict):
        value = json.dumps(value, separators=(",", ":"))
    if isinstance(value, str):
        value = value.encode()
    return b64(value)


def hs256(
    header: dict[str, Any] | str | bytes, claims: dict[str, Any] | str | bytes, key: bytes | str
) -> str:
    """header.claims MACed with HMAC-SHA256 over exactly the encoded bytes."""
    key_bytes = key.encode() if isinstance(key, str) else key
    signing_input = f"{_part(header)}.{_part(claims)}"
    sig = hmac.new(key_bytes, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def unsigned(
    header: dict[str, Any] | str, claims: dict[str, Any] | str, signature: str = ""
) -> str:
    return f"{_part(header)}.{_part(claims)}.{signature}"


def claims(sub: Any = "42", ttl: int = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, "aud": AUD}
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def pk_token(claims_: dict[str, Any], private_pem: bytes, alg: str, **headers: Any) -> str:
    return jwt.encode(claims_, private_pem, algorithm=alg, headers=headers or None)
