"""Where the bridge's FCM credentials come from.

* ``FCM_CREDENTIALS_FILE`` set: that service-account JSON (google-auth honours its
  ``token_uri``); sends go to ``FCM_ENDPOINT`` or Google.
* unset, outside production: a throw-away service account with a fresh RSA key made in memory
  at start-up, whose ``token_uri`` is the local FCM emulator's ``/token``; sends go to
  ``FCM_ENDPOINT`` or the emulator on ``FCM_EMULATOR_PORT``. Nothing is written to disk.
* unset in production: refused at start-up, saying what to set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from plantnotify.settings import ConfigError, Settings


@dataclass(frozen=True, slots=True)
class FcmTarget:
    service_account: dict[str, Any]  # the service-account JSON (real or ephemeral)
    endpoint: str | None  # base URL replacing https://fcm.googleapis.com; None: Google
    ephemeral: bool

    @property
    def project_id(self) -> str:
        return str(self.service_account["project_id"])

    @property
    def client_email(self) -> str:
        return str(self.service_account["client_email"])


@lru_cache(maxsize=8)
def _ephemeral_key_pem() -> str:
    """One RSA key per process (generation takes ~50 ms); never persisted."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def ephemeral_service_account(
    token_uri: str, project_id: str, client_email: str | None = None
) -> dict[str, Any]:
    """A service-account JSON for the emulator: real shape, fresh key, ``token_uri`` local."""
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "emulator",
        "private_key": _ephemeral_key_pem(),
        "client_email": client_email or f"bridge@{project_id}.iam.gserviceaccount.com",
        "client_id": "0",
        "token_uri": token_uri,
    }


def emulator_url(settings: Settings) -> str:
    return settings.fcm_endpoint or f"http://127.0.0.1:{settings.fcm_emulator_port}"


def resolve(settings: Settings) -> FcmTarget:
    path = settings.fcm_credentials_file
    if path is not None:
        try:
            sa = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(
                f"FCM_CREDENTIALS_FILE={path} cannot be read ({exc.strerror}); point it at the "
                "service-account JSON downloaded from the Firebase console"
            ) from None
        except ValueError:
            raise ConfigError(f"FCM_CREDENTIALS_FILE={path} is not JSON") from None
        missing = [
            k
            for k in ("type", "project_id", "private_key", "client_email", "token_uri")
            if not (isinstance(sa, dict) and sa.get(k))
        ]
        if missing or sa.get("type") != "service_account":
            raise ConfigError(
                f"FCM_CREDENTIALS_FILE={path} is not a service-account key "
                f"(missing: {', '.join(missing) or 'type=service_account'})"
            )
        return FcmTarget(sa, settings.fcm_endpoint, ephemeral=False)
    if settings.environment == "production":
        raise ConfigError(
            "FCM_CREDENTIALS_FILE is not set; in production set it to the Firebase "
            "service-account JSON (the local FCM emulator is for development only)"
        )
    base = emulator_url(settings).rstrip("/")
    sa = ephemeral_service_account(f"{base}/token", settings.fcm_project_id)
    return FcmTarget(sa, base, ephemeral=True)
