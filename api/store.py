"""The API's side of PostgreSQL: every query the routes run, as SQLAlchemy statements on the
mapped classes, each behind a name that says what it is for.

Routes take a request-scoped session (``SessionDep``) and call these; they never build a query
themselves. Ownership is part of every read: another user's row is simply not found.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from plantnotify.contracts.events import AnalysisStatus
from plantnotify.db.models import Analysis, AnalysisImage, Device, EventRow

_PROCESSING = AnalysisStatus.PROCESSING.value

# --- uploads and their jobs -----------------------------------------------------------------


def add_analysis(
    sessions: sessionmaker[Session],
    analysis_id: str,
    user_id: str,
    crop_type: str | None,
    mime_type: str,
    data: bytes,
    request_id: str | None = None,
    trace_id: str | None = None,
) -> None:
    """A new analysis (Processing) and its image, in one transaction."""
    with sessions() as session, session.begin():
        session.add(
            Analysis(
                id=analysis_id,
                user_id=user_id,
                status=_PROCESSING,
                crop_type=crop_type,
                mime_type=mime_type,
                image_size=len(data),
                request_id=request_id,
                trace_id=trace_id,
            )
        )
        session.flush()
        session.add(AnalysisImage(analysis_id=analysis_id, data=data))


def fail_analysis(sessions: sessionmaker[Session], analysis_id: str, message: str) -> None:
    """End a still-Processing analysis as Failed with ``message``."""
    with sessions() as session, session.begin():
        session.execute(
            update(Analysis)
            .where(Analysis.id == analysis_id, Analysis.status == _PROCESSING)
            .values(
                status=AnalysisStatus.FAILED.value,
                error_message=message,
                updated_at=func.now(),
                completed_at=func.now(),
            )
        )


def mark_queued(session: Session, analysis_id: str) -> None:
    """Stamp ``queued_at``: the analysis's job reached RabbitMQ (in the caller's transaction)."""
    session.execute(update(Analysis).where(Analysis.id == analysis_id).values(queued_at=func.now()))


def _unqueued(grace_seconds: float) -> ColumnElement[bool]:
    cutoff = func.now() - timedelta(seconds=grace_seconds)
    return (
        (Analysis.status == _PROCESSING)
        & Analysis.queued_at.is_(None)
        & (Analysis.created_at < cutoff)
    )


def unqueued_analyses(session: Session, grace_seconds: float, limit: int) -> list[str]:
    """Analyses stored more than ``grace_seconds`` ago whose job was never confirmed queued."""
    return list(
        session.scalars(
            select(Analysis.id)
            .where(_unqueued(grace_seconds))
            .order_by(Analysis.created_at)
            .limit(limit)
        )
    )


def lock_unqueued(
    session: Session, analysis_id: str, grace_seconds: float
) -> Row[str, str, str | None, str | None] | None:
    """Lock one such analysis for requeueing (skipped if another API instance holds it); its
    ``id``, ``user_id``, ``request_id`` and ``trace_id``, or None if it needs no requeue now."""
    return session.execute(
        select(Analysis.id, Analysis.user_id, Analysis.request_id, Analysis.trace_id)
        .where(Analysis.id == analysis_id, _unqueued(grace_seconds))
        .with_for_update(skip_locked=True)
    ).first()


# --- analyses -------------------------------------------------------------------------------


def own_analysis(session: Session, user_id: str, analysis_id: str) -> Analysis | None:
    return session.scalar(
        select(Analysis).where(Analysis.id == analysis_id, Analysis.user_id == user_id)
    )


def analysis_position(
    session: Session, user_id: str, analysis_id: str
) -> tuple[datetime, str] | None:
    """Where one of the user's analyses sits in their newest-first list (a page cursor)."""
    row = session.execute(
        select(Analysis.created_at, Analysis.id).where(
            Analysis.id == analysis_id, Analysis.user_id == user_id
        )
    ).first()
    return None if row is None else (row.created_at, row.id)


def analyses_page(
    session: Session,
    user_id: str,
    limit: int,
    before: datetime | tuple[datetime, str] | None = None,
) -> list[Analysis]:
    """The user's analyses, newest first, before a time or a position."""
    query = select(Analysis).where(Analysis.user_id == user_id)
    if isinstance(before, datetime):
        query = query.where(Analysis.created_at < before)
    elif before is not None:
        query = query.where(tuple_(Analysis.created_at, Analysis.id) < before)
    return list(
        session.scalars(query.order_by(Analysis.created_at.desc(), Analysis.id.desc()).limit(limit))
    )


def own_image(session: Session, user_id: str, analysis_id: str) -> tuple[bytes, str] | None:
    """The uploaded image and its MIME type, if the analysis is the user's."""
    row = session.execute(
        select(AnalysisImage.data, Analysis.mime_type)
        .join(Analysis, Analysis.id == AnalysisImage.analysis_id)
        .where(Analysis.id == analysis_id, Analysis.user_id == user_id)
    ).first()
    return None if row is None else (row.data, row.mime_type)


# --- devices --------------------------------------------------------------------------------


def register_device(
    session: Session, token: str, user_id: str, platform: str, *, max_devices: int = 0
) -> tuple[str | None, int]:
    """Register (or move to this user) an FCM token; not committed. Returns the user the token
    moved from (None: new, or already this user's) and how many of the user's least recently
    registered tokens were dropped to keep at most ``max_devices`` (0: no cap)."""
    previous = session.scalar(select(Device.user_id).where(Device.token == token).with_for_update())
    statement = insert(Device).values(token=token, user_id=user_id, platform=platform)
    statement = statement.on_conflict_do_update(
        index_elements=[Device.token],
        set_={
            "user_id": statement.excluded.user_id,
            "platform": statement.excluded.platform,
            "updated_at": func.now(),
        },
    )
    session.execute(statement)
    evicted = 0
    if max_devices:
        keep = (
            select(Device.token)
            .where(Device.user_id == user_id)
            .order_by(Device.updated_at.desc(), Device.token)
            .limit(max_devices)
        )
        result = session.execute(
            delete(Device).where(Device.user_id == user_id, Device.token.not_in(keep))
        )
        evicted = int(getattr(result, "rowcount", 0) or 0)
    return (previous if previous not in (None, user_id) else None), evicted


def unregister_device(session: Session, token: str, user_id: str) -> bool:
    """Remove the user's registration of a token; committed. True if there was one."""
    result = session.execute(delete(Device).where(Device.token == token, Device.user_id == user_id))
    session.commit()
    return bool(getattr(result, "rowcount", 0))


# --- notifications --------------------------------------------------------------------------


def events_page(
    session: Session, user_id: str, after: datetime | None, limit: int, group_max: int
) -> tuple[list[Row[Any]], bool]:
    """The user's events created after ``after``, oldest first: at most ``limit``, plus the
    rest of the group that shares the last one's timestamp (one transaction), at most
    ``group_max`` more. Rows have ``seq``, ``created_at`` and ``payload``; the flag says
    whether more were waiting."""
    query = select(EventRow.seq, EventRow.created_at, EventRow.payload).where(
        EventRow.user_id == user_id
    )
    if after is not None:
        query = query.where(EventRow.created_at > after)
    order = (EventRow.created_at, EventRow.seq)
    rows: list[Row[Any]] = list(session.execute(query.order_by(*order).limit(limit + 1)))
    has_more = len(rows) > limit
    if has_more:
        rows = rows[:limit]
        last = rows[-1]
        rows += list(
            session.execute(
                query.where(EventRow.created_at == last.created_at, EventRow.seq > last.seq)
                .order_by(*order)
                .limit(group_max)
            )
        )
    return rows, has_more
