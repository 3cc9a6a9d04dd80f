"""``GET /notifications?since=``: missed-event recovery (contract §3, items as in §4).

Items are the event payloads exactly as published on MQTT, oldest first. Events committed in
one transaction share a timestamp, so a page never ends inside such a group (it may exceed
``limit`` by the rest of the group); ``X-Next-Since`` is the ``since`` for the next call.
Clients de-duplicate on ``eventId`` anyway (QoS 1), so re-asking with a slightly earlier
``since`` is harmless and covers events whose transaction committed late.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse

from api import store
from api.deps import Caller, SessionDep
from api.schemas import ErrorResponse
from api.timestamps import parse_timestamp
from plantnotify.contracts.events import Event

router = APIRouter(tags=["notifications"])

NOTIFICATIONS_DEFAULT, NOTIFICATIONS_MAX = 100, 500
NEXT_SINCE_HEADER = "X-Next-Since"
HAS_MORE_HEADER = "X-Has-More"


@router.get(
    "/notifications",
    response_model=list[Event],
    summary="The caller's events since a time, oldest first",
    description=f"Event payloads (AnalysisProgress, AnalysisCompleted, AnalysisFailed) "
    f"created after `since`. `{NEXT_SINCE_HEADER}` is the `since` of the next call; "
    f"`{HAS_MORE_HEADER}: true` means more are waiting right now.",
    responses={
        401: {"model": ErrorResponse},
        422: {"model": ErrorResponse, "description": "`since` is not an ISO 8601 time"},
    },
)
def list_notifications(
    caller: Caller,
    session: SessionDep,
    since: Annotated[
        str | None,
        Query(description="ISO 8601 time, e.g. `2026-01-31T12:00:00Z`; omitted: from the start."),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=NOTIFICATIONS_MAX, description="Page size.")
    ] = NOTIFICATIONS_DEFAULT,
) -> JSONResponse:
    after = None
    if since is not None:
        try:
            after = parse_timestamp(since)
        except ValueError:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "`since` must be an ISO 8601 time with a time zone, e.g. "
                "2026-01-31T12:00:00Z (URL-encode a `+` offset as %2B)",
            ) from None
    rows, has_more = store.events_page(
        session, caller.user_id, after, limit, group_max=NOTIFICATIONS_MAX
    )
    headers = {HAS_MORE_HEADER: "true" if has_more else "false"}
    if rows:
        headers[NEXT_SINCE_HEADER] = rows[-1].created_at.isoformat()
    elif since is not None:
        headers[NEXT_SINCE_HEADER] = since
    return JSONResponse([_payload(r.payload) for r in rows], headers=headers)


def _payload(stored: Any) -> Any:
    return json.loads(stored) if isinstance(stored, str | bytes) else stored
