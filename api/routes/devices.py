"""FCM device registrations (read by the bridge): ``POST /devices``, ``DELETE /devices/{token}``.

A token belongs to one device, and a device to whoever registered it last: re-registering a
token under another user moves it (the phone changed hands or accounts). ``DELETE`` is
idempotent: ``204`` whether or not the token existed, and it only ever removes the caller's
own registration (another user's token is left alone, and its existence is not revealed).
A move is written to the audit log for both users; a user keeps at most
``MAX_DEVICES_PER_USER`` tokens (the least recently registered go, also on record).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from api import audit, store
from api.deps import Caller, SessionDep, StateDep, client_ip
from api.schemas import DEVICE_TOKEN_PATTERN, DeviceIn, DeviceOut, ErrorResponse
from plantnotify.logs import get_logger

router = APIRouter(prefix="/devices", tags=["devices"])
log = get_logger("plantnotify.api.devices")
_TOKEN_RE = re.compile(DEVICE_TOKEN_PATTERN)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DeviceOut,
    summary="Register an FCM token of the caller's device",
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def register_device(
    body: DeviceIn, request: Request, caller: Caller, session: SessionDep, state: StateDep
) -> DeviceOut:
    moved_from, evicted = store.register_device(
        session,
        body.token,
        caller.user_id,
        body.platform.value,
        max_devices=state.settings.max_devices_per_user,
    )
    ip = client_ip(request)
    if moved_from is not None:  # the phone changed hands or accounts: on record for both
        audit.record(
            session, audit.DEVICE_MOVED, user_id=caller.user_id, ip=ip, fromUser=moved_from
        )
        audit.record(session, audit.DEVICE_MOVED, user_id=moved_from, ip=ip, toUser=caller.user_id)
    if evicted:
        audit.record(session, audit.DEVICE_EVICTED, user_id=caller.user_id, ip=ip, count=evicted)
    session.commit()
    log.info(
        "device registered", extra={"user_id": caller.user_id, "platform": body.platform.value}
    )
    return DeviceOut(token=body.token, platform=body.platform)


@router.delete(
    "/{token}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Unregister one of the caller's FCM tokens (idempotent)",
    responses={401: {"model": ErrorResponse}},
)
def unregister_device(
    token: Annotated[str, Path(max_length=4096)], caller: Caller, session: SessionDep
) -> Response:
    if _TOKEN_RE.fullmatch(token) and store.unregister_device(session, token, caller.user_id):
        log.info("device unregistered", extra={"user_id": caller.user_id})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
