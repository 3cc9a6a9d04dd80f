"""``GET /plantanalyses/{id}/delivery``: how one analysis reached (or missed) its owner.

The owner's own answer to "why didn't I get a notification?": the same timeline that
``plantnotify why`` shows operators (``plantnotify/timeline.py``). Another user's analysis is
``404`` exactly like an unknown one.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api.deps import Caller, SessionDep
from api.schemas import ErrorResponse
from plantnotify.timeline import DeliveryTimeline, analysis_timeline

router = APIRouter(prefix="/plantanalyses", tags=["analyses"])


def _timeline(session: Session, user_id: str, analysis_id: str) -> DeliveryTimeline:
    timeline = analysis_timeline(session, analysis_id, owner=user_id)
    if timeline is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such analysis (or it is not yours)")
    return timeline


@router.get(
    "/{analysis_id}/delivery",
    response_model=DeliveryTimeline,
    response_model_by_alias=True,
    summary="The delivery timeline of one analysis",
    description="Uploaded → queued → N8N attempts → stored → published → delivered to live "
    "devices (their receipts, with each device's completion-to-notification time) → push "
    "decision → FCM result per device, oldest first, with the analysis' `traceId` and a "
    "one-sentence `outcome`.",
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)
async def delivery(analysis_id: str, caller: Caller, session: SessionDep) -> DeliveryTimeline:
    return await run_in_threadpool(_timeline, session, caller.user_id, analysis_id)
