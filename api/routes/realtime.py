"""``POST /realtime/token``: the MQTT credentials of the caller (contract §2)."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, status

from api import ratelimit
from api.deps import Caller, SessionDep, StateDep
from api.schemas import ErrorResponse, MqttEndpoints, RealtimeTokenResponse, RealtimeTopics
from plantnotify import rollout
from plantnotify.contracts import topics
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.ids import client_id_prefix

router = APIRouter(prefix="/realtime", tags=["realtime"])


@router.post(
    "/token",
    response_model=RealtimeTokenResponse,
    responses={
        401: {"model": ErrorResponse},
        409: {
            "model": ErrorResponse,
            "description": "Realtime is off for this user (rollout switch): poll "
            "`GET /notifications?since=`; `GET /config` says when it is back",
        },
        429: {"model": ErrorResponse, "description": "Too many tokens; see Retry-After"},
    },
    summary="Get MQTT credentials for the caller",
    description="The token is the MQTT password; the MQTT username is the user id. It never "
    "carries a role. It names the caller's login session: logging out (or any revocation) "
    "closes its connections and the broker refuses it. Tokens got with an identity "
    "provider's access token live at most as long as that access token.",
)
def realtime_token(caller: Caller, state: StateDep, session: SessionDep) -> RealtimeTokenResponse:
    settings = state.settings
    if rollout.mode_for(caller.user_id, rollout.read_percent(session)) != "mqtt":
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "Realtime updates are off for this account right now; poll "
            "GET /api/v1/notifications?since= instead (GET /api/v1/config says when to retry)",
        )
    ratelimit.check(state.sessions, settings, ("realtime_user", caller.user_id))
    ttl = settings.mqtt_token_ttl_seconds
    if caller.session_id is None:  # not revocable per session: bounded by the access token
        ttl = min(ttl, max(1, caller.expires_at - int(time.time())))
    token = mint_mqtt_token(settings.mqtt_signer, caller.user_id, ttl, session_id=caller.session_id)
    return RealtimeTokenResponse(
        token=token,
        username=caller.user_id,
        client_id_prefix=client_id_prefix(caller.user_id),
        expires_in=ttl,
        mqtt=MqttEndpoints(
            host=settings.mqtt_public_host or settings.mqtt_host,
            port=settings.mqtt_port,
            ws_url=settings.mqtt_public_ws_url,
            protocol_version=settings.mqtt_protocol,
        ),
        topics=RealtimeTopics(
            analyses=topics.analyses_filter(caller.user_id),
            receipts=topics.receipts_topic(caller.user_id),
        ),
    )
