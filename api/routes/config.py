"""``GET /config``: what the web app needs to know about this deployment beyond the contract.

One thing today: where pushes go when this is the local stack (no ``FCM_CREDENTIALS_FILE``,
so the bridge sends to the FCM emulator). The web app then links to the emulator's delivery
page and registers the browser as a ``web`` push device, so closing the tab visibly leads to
a push. ``null`` wherever real FCM credentials are configured. No authentication: it names no
user data, and the login page may show it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import Field

from api.deps import SettingsDep
from api.schemas import ApiModel

router = APIRouter(tags=["config"])


class ClientConfig(ApiModel):
    push_emulator_url: str | None = Field(
        description="The local FCM emulator's page listing delivered pushes; null with real FCM."
    )


@router.get("/config", response_model=ClientConfig, summary="Client configuration")
def client_config(request: Request, settings: SettingsDep) -> ClientConfig:
    if settings.fcm_credentials_file is not None or settings.environment == "production":
        return ClientConfig(push_emulator_url=None)
    # The same emulator the bridge sends to (bridge.credentials.emulator_url), as the browser
    # reaches it: on the host the browser used for the API.
    base = settings.fcm_endpoint or f"http://{request.url.hostname}:{settings.fcm_emulator_port}"
    return ClientConfig(push_emulator_url=base.rstrip("/") + "/")
