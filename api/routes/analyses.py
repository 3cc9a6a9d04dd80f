"""Plant analyses: upload (``POST /plantanalyses/async``), list, detail and image.

Only the caller's analyses exist for them: another user's id answers ``404``, exactly like an
unknown one, so ids cannot be probed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api import ratelimit, store
from api.deps import Caller, SessionDep, SettingsDep, StateDep, UploadTrace, client_ip
from api.images import DecoderBusy, ImageRejected, ImageTooLarge
from api.photos import accept_photo
from api.requeue import mark_queued
from api.schemas import AnalysisOut, ErrorResponse, UploadAccepted
from api.timestamps import parse_timestamp
from api.uploads import CROP_TYPE_FIELD, CROP_TYPE_MAX, IMAGE_FIELD, UploadError, read_upload_form
from plantnotify.amqp.errors import QueueUnavailable
from plantnotify.contracts.events import AnalysisStatus
from plantnotify.contracts.queues import AnalysisJob
from plantnotify.contracts.urls import image_url
from plantnotify.db.models import Analysis
from plantnotify.logs import current_context, get_logger
from plantnotify.settings import Settings

router = APIRouter(prefix="/plantanalyses", tags=["analyses"])
log = get_logger("plantnotify.api.analyses")

NOT_QUEUED_MESSAGE = (
    "The analysis could not be queued (RabbitMQ unavailable); upload the image again."
)
LIST_DEFAULT, LIST_MAX = 20, 100
NEXT_BEFORE_HEADER = "X-Next-Before"

_NOT_FOUND = "No such analysis (or it is not yours)"

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [IMAGE_FIELD],
                    "properties": {
                        IMAGE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "JPEG, PNG or WebP photo, at most MAX_UPLOAD_MB MiB.",
                        },
                        CROP_TYPE_FIELD: {
                            "type": "string",
                            "maxLength": CROP_TYPE_MAX,
                            "description": "Optional crop hint, e.g. `tomato`.",
                        },
                    },
                }
            }
        },
    }
}


def to_out(analysis: Analysis, settings: Settings) -> AnalysisOut:
    return AnalysisOut(
        analysis_id=analysis.id,
        status=AnalysisStatus(analysis.status),
        crop_type=analysis.crop_type,
        primary_concern=analysis.primary_concern,
        overall_health_score=analysis.overall_health_score,
        result=analysis.result,
        error_message=analysis.error_message,
        created_at=analysis.created_at,
        updated_at=analysis.updated_at,
        completed_at=analysis.completed_at,
        image_url=image_url(analysis.id, settings.public_base_url),
    )


# --- upload -------------------------------------------------------------------------------


@router.post(
    "/async",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    summary="Upload a plant photo for analysis",
    description="Stores the photo, queues the analysis and answers at once. The result "
    "arrives as an MQTT event on `users/{userId}/analyses/{analysisId}` (and in "
    "`GET /notifications`).",
    responses={
        401: {"model": ErrorResponse},
        413: {"model": ErrorResponse, "description": "Larger than MAX_UPLOAD_MB"},
        415: {"model": ErrorResponse, "description": "Not a JPEG, PNG, WebP or HEIC/HEIF photo"},
        422: {"model": ErrorResponse, "description": "Missing `image` or bad `cropType`"},
        429: {"model": ErrorResponse, "description": "Too many uploads; see Retry-After"},
        503: {"model": ErrorResponse, "description": "The queue is unavailable; nothing queued"},
    },
    openapi_extra=_UPLOAD_BODY,
)
async def upload(
    request: Request, response: Response, caller: Caller, state: StateDep, trace: UploadTrace
) -> UploadAccepted:
    settings, metrics = state.settings, state.metrics
    await run_in_threadpool(
        ratelimit.check,
        state.sessions,
        settings,
        ("upload_user", caller.user_id),
        ("upload_ip", client_ip(request)),
    )
    try:
        form = await read_upload_form(request, settings.max_upload_bytes)
        image, checked = await run_in_threadpool(accept_photo, form.image)
    except UploadError as exc:
        metrics.upload(exc.outcome)
        raise HTTPException(exc.status_code, exc.detail) from None
    except ImageTooLarge as exc:
        metrics.upload("too_large")
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from None
    except ImageRejected as exc:
        metrics.upload("not_an_image")
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from None
    except DecoderBusy:
        metrics.upload("busy")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Too many photos are being checked right now; try again in a few seconds",
            headers={"Retry-After": "5"},
        ) from None

    analysis_id = str(uuid.uuid4())
    await run_in_threadpool(
        store.add_analysis,
        state.sessions,
        analysis_id,
        caller.user_id,
        form.crop_type,
        checked.mime_type,
        image,
        current_context().get("request_id"),
        trace.trace_id,
    )
    job = AnalysisJob(
        analysis_id=analysis_id,
        user_id=caller.user_id,
        request_id=current_context().get("request_id"),
        traceparent=trace.traceparent,
    )
    try:
        await run_in_threadpool(state.publisher.publish, job)
    except QueueUnavailable as exc:
        metrics.upload("queue_unavailable")
        log.warning(
            "upload not queued: %s",
            exc,
            extra={"user_id": caller.user_id, "analysis_id": analysis_id},
        )
        # Failed rather than deleted: if the job did reach the queue before the connection
        # dropped, the worker finds a finished analysis and skips it (its idempotency rule).
        await run_in_threadpool(
            store.fail_analysis, state.sessions, analysis_id, NOT_QUEUED_MESSAGE
        )
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "The analysis queue is unavailable right now, so nothing was queued; "
            "try the upload again in a minute",
            headers={"Retry-After": "30"},
        ) from None
    try:
        await run_in_threadpool(mark_queued, state.sessions, analysis_id)
    except SQLAlchemyError as exc:
        # The job is queued, so the answer is 202. Without the stamp the requeue sweep
        # publishes it once more later: a duplicate the worker skips, never a lost job.
        log.warning(
            "could not stamp queued_at: %s", type(exc).__name__, extra={"analysis_id": analysis_id}
        )
    metrics.upload("accepted")
    log.info(
        "analysis queued",
        extra={"user_id": caller.user_id, "analysis_id": analysis_id, "bytes": len(image)},
    )
    response.headers["Location"] = f"{request.url.path.rsplit('/', 1)[0]}/{analysis_id}"
    return UploadAccepted(analysis_id=analysis_id)


# --- read ---------------------------------------------------------------------------------


def _own_analysis(session: Session, user_id: str, analysis_id: str) -> Analysis:
    if len(analysis_id) > 64:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _NOT_FOUND)
    analysis = store.own_analysis(session, user_id, analysis_id)
    if analysis is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _NOT_FOUND)
    return analysis


@router.get(
    "",
    response_model=list[AnalysisOut],
    summary="The caller's analyses, newest first",
    description=f"Pages of at most `limit`. When more exist, the `{NEXT_BEFORE_HEADER}` "
    "response header holds the value to pass as `before` for the next page.",
    responses={
        401: {"model": ErrorResponse},
        422: {"model": ErrorResponse, "description": "Bad `limit` or `before`"},
    },
)
def list_analyses(
    response: Response,
    caller: Caller,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=LIST_MAX, description="Page size.")] = LIST_DEFAULT,
    before: Annotated[
        str | None,
        Query(
            max_length=64,
            description="An analysisId (the page continues after it) or an ISO 8601 time.",
        ),
    ] = None,
) -> list[AnalysisOut]:
    cursor = _cursor(session, caller.user_id, before) if before else None
    rows = store.analyses_page(session, caller.user_id, limit + 1, cursor)
    if len(rows) > limit:
        rows = rows[:limit]
        response.headers[NEXT_BEFORE_HEADER] = rows[-1].id
    return [to_out(a, settings) for a in rows]


def _cursor(session: Session, user_id: str, before: str) -> datetime | tuple[datetime, str]:
    position = store.analysis_position(session, user_id, before)
    if position is not None:
        return position
    try:
        return parse_timestamp(before)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "`before` must be one of your analysis ids or an ISO 8601 time "
            "(e.g. 2026-01-31T12:00:00Z)",
        ) from None


@router.get(
    "/{analysis_id}",
    response_model=AnalysisOut,
    summary="One analysis of the caller",
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)
def get_analysis(
    analysis_id: str, caller: Caller, session: SessionDep, settings: SettingsDep
) -> AnalysisOut:
    return to_out(_own_analysis(session, caller.user_id, analysis_id), settings)


@router.get(
    "/{analysis_id}/image",
    summary="The uploaded photo (only its owner)",
    response_class=Response,
    responses={
        200: {
            "description": "The image, with its own MIME type",
            "content": {m: {} for m in ("image/jpeg", "image/png", "image/webp")},
        },
        401: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
    },
)
def get_image(analysis_id: str, caller: Caller, session: SessionDep) -> Response:
    if len(analysis_id) > 64:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _NOT_FOUND)
    image = store.own_image(session, caller.user_id, analysis_id)
    if image is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _NOT_FOUND)
    data, mime_type = image
    return Response(
        content=data,
        media_type=mime_type,
        headers={
            "Cache-Control": "private, max-age=86400, immutable",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )
