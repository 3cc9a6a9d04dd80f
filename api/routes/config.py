"""``GET /config``: what a client needs to know about this deployment beyond the contract.

- ``realtime``: whether this client should use MQTT (``mode: "mqtt"``) or poll
  ``GET /notifications?since=`` every ``pollSeconds`` (``mode: "polling"``), from the rollout
  switch (``plantnotify rollout``), read from the database on every call; clients ask again
  every ``checkSeconds``. The mode is per user: send the access token. Without one, the answer
  is ``mqtt`` only when realtime is on for everybody.
- ``imageTypes``: the photo types uploads accept (the web app's picker offers exactly these).
- ``webPush``: with ``FCM_WEB_CONFIG``, the Firebase web app config and VAPID key the web app
  needs to get an FCM web push token (public values, as in any Firebase web app); else null.
- ``pushEmulatorUrl``: development and tests only (no ``FCM_CREDENTIALS_FILE``): the
  local FCM emulator's page listing delivered pushes; ``null`` otherwise.

No authentication needed: it names no user data, and the login page may read it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field

from api.deps import SessionDep, SettingsDep, StateDep
from api.photos import ACCEPTED_MIME_TYPES
from api.schemas import ApiModel
from api.tokens import InvalidToken
from plantnotify import rollout

router = APIRouter(tags=["config"])
_bearer = HTTPBearer(auto_error=False)


class RealtimeConfig(ApiModel):
    mode: Literal["mqtt", "polling"] = Field(
        description="`mqtt`: connect to the broker; `polling`: GET /notifications?since=."
    )
    poll_seconds: float = Field(description="How often to poll in `polling` mode.")
    check_seconds: float = Field(description="How often to ask /config again.")


class WebPushConfig(ApiModel):
    firebase: dict[str, Any] = Field(description="Firebase web app config (public).")
    vapid_key: str | None = Field(description="Web push public key of the Firebase project.")


class ClientConfig(ApiModel):
    realtime: RealtimeConfig
    image_types: list[str] = Field(description="MIME types of the photos uploads accept.")
    web_push: WebPushConfig | None = Field(
        None, description="How the web app gets an FCM web push token; null: not configured."
    )
    push_emulator_url: str | None = Field(
        description="Development only: the local FCM emulator's page; null with real FCM."
    )


@router.get("/config", response_model=ClientConfig, summary="Client configuration")
def client_config(
    request: Request,
    settings: SettingsDep,
    state: StateDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ClientConfig:
    user_id = None
    if credentials is not None:
        try:
            user_id = state.tokens.verify(credentials.credentials).user_id
        except InvalidToken:
            user_id = None
    percent = rollout.read_percent(session)
    return ClientConfig(
        realtime=RealtimeConfig(
            mode=rollout.mode_for(user_id, percent),
            poll_seconds=settings.poll_seconds,
            check_seconds=settings.rollout_check_seconds,
        ),
        image_types=list(ACCEPTED_MIME_TYPES),
        web_push=(
            WebPushConfig(
                firebase=json.loads(settings.fcm_web_config),
                vapid_key=settings.fcm_web_vapid_key,
            )
            if settings.fcm_web_config
            else None
        ),
        push_emulator_url=_push_emulator_url(request, settings),
    )


def _push_emulator_url(request: Request, settings: SettingsDep) -> str | None:
    if settings.fcm_credentials_file is not None or settings.environment == "production":
        return None
    # The same emulator the bridge sends to (bridge.credentials.emulator_url), as the browser
    # reaches it: on the host the browser used for the API.
    base = settings.fcm_endpoint or f"http://{request.url.hostname}:{settings.fcm_emulator_port}"
    return base.rstrip("/") + "/"
