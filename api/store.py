"""The API's side of PostgreSQL: every query of the API (routes, accounts, rate limits, the audit
log, the revocation feed, the session cap, the sweeps), as SQLAlchemy statements on the mapped
classes, each behind a name that says what it is for.

Callers pass a session (a route's request-scoped ``SessionDep``) and own the transaction; they
never build or run a query themselves (tests/test_architecture.py checks), but may set
attributes of a row loaded here, which the session writes at commit. The policy stays with the
caller (``api/accounts.py`` decides when a refresh token is reused, ``api/ratelimit.py`` what a
count means). Ownership is part of every read: another user's row is simply not found.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, Row, case, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from plantnotify.contracts.events import AnalysisStatus
from plantnotify.db.models import (
    Analysis,
    AnalysisImage,
    AuditEntry,
    AuthSession,
    Device,
    EventRow,
    PersistentMqttSession,
    RateLimitBucket,
    RefreshToken,
    RetainedClear,
    Revocation,
    TraceStep,
    User,
)

_PROCESSING = AnalysisStatus.PROCESSING.value


def ping(engine: Engine) -> None:
    """One round trip to PostgreSQL (readiness); raises the driver's error if there is none."""
    with engine.connect() as conn:
        conn.execute(select(1))


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


# --- users ----------------------------------------------------------------------------------


class UsernameTaken(Exception):
    """Another account already has this username (the transaction was rolled back)."""


def add_user(session: Session, user_id: str, username: str, password_hash: str) -> User:
    """A new account, flushed (not committed). Raises UsernameTaken."""
    user = User(id=user_id, username=username, password_hash=password_hash)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise UsernameTaken(username) from None
    return user


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def user_by_id(session: Session, user_id: str, *, for_update: bool = False) -> User | None:
    return session.get(User, user_id, with_for_update=for_update)


# --- login sessions, refresh tokens, revocations (policy: api/accounts.py) ------------------


def add_auth_session(
    session: Session, session_id: str, user_id: str, expires_at: datetime, user_agent: str | None
) -> None:
    """A new login session, flushed (its refresh tokens refer to it)."""
    session.add(
        AuthSession(id=session_id, user_id=user_id, expires_at=expires_at, user_agent=user_agent)
    )
    session.flush()


def auth_session(
    session: Session, session_id: str, *, for_update: bool = False
) -> AuthSession | None:
    return session.get(AuthSession, session_id, with_for_update=for_update)


def add_refresh_token(session: Session, token_hash: str, session_id: str) -> None:
    session.add(RefreshToken(token_hash=token_hash, session_id=session_id))


def refresh_token(
    session: Session, token_hash: str, *, for_update: bool = False
) -> RefreshToken | None:
    return session.get(RefreshToken, token_hash, with_for_update=for_update)


def drop_refresh_tokens(session: Session, session_ids: list[str]) -> None:
    """Forget every refresh token of these login sessions."""
    session.execute(delete(RefreshToken).where(RefreshToken.session_id.in_(session_ids)))


def end_user_sessions(session: Session, user_id: str, reason: str, at: datetime) -> list[str]:
    """Mark every still-open login session of the user revoked; their ids."""
    return list(
        session.scalars(
            update(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=at, revoked_reason=reason)
            .returning(AuthSession.id)
        )
    )


def add_revocation(
    session: Session,
    user_id: str,
    reason: str,
    expires_at: datetime,
    *,
    session_id: str | None = None,
    not_before: datetime | None = None,
) -> None:
    """A ``revocations`` row (one session, or every token of the user issued before
    ``not_before``), which the revocation feed pushes to the broker."""
    session.add(
        Revocation(
            user_id=user_id,
            session_id=session_id,
            not_before=not_before,
            reason=reason,
            expires_at=expires_at,
        )
    )


def session_open(session: Session, session_id: str | None, user_id: str) -> bool:
    """Whether the user's login session exists and is not revoked."""
    found = session.scalar(
        select(AuthSession.id).where(
            AuthSession.id == session_id,
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
        )
    )
    return found is not None


def user_not_before(session: Session, user_id: str) -> datetime | None:
    """The latest in-force "every token of this user issued before" time, if any."""
    return session.scalar(
        select(func.max(Revocation.not_before)).where(
            Revocation.user_id == user_id,
            Revocation.session_id.is_(None),
            Revocation.expires_at > func.now(),
        )
    )


def purge_auth_records(session: Session, now: datetime, revoked_before: datetime) -> None:
    """Delete expired revocations, and login sessions expired or revoked before
    ``revoked_before``."""
    session.execute(delete(Revocation).where(Revocation.expires_at <= now))
    session.execute(
        delete(AuthSession).where(
            (AuthSession.expires_at <= now) | (AuthSession.revoked_at < revoked_before)
        )
    )


def revocations_since(session: Session, since: datetime, now: datetime) -> list[Revocation]:
    """Revocations created since ``since`` and still in force, oldest first."""
    return list(
        session.scalars(
            select(Revocation)
            .where(Revocation.created_at >= since, Revocation.expires_at > now)
            .order_by(Revocation.seq)
        )
    )


def revocations_in_force(session: Session, now: datetime) -> list[Revocation]:
    """Every revocation still in force, oldest first."""
    return list(
        session.scalars(
            select(Revocation)
            .where(Revocation.expires_at > now)
            .order_by(Revocation.seq)
            .execution_options(yield_per=1000)
        )
    )


def retained_clears_since(session: Session, since: datetime) -> list[str]:
    """Topics of deleted accounts queued for an empty retained publish since ``since``."""
    return list(
        session.scalars(select(RetainedClear.topic).where(RetainedClear.created_at >= since))
    )


def retained_clears_in_force(session: Session, now: datetime) -> list[str]:
    return list(session.scalars(select(RetainedClear.topic).where(RetainedClear.expires_at > now)))


# --- the audit log (event names: api/audit.py) ----------------------------------------------


def add_audit_entry(
    session: Session, event: str, user_id: str | None, ip: str | None, detail: dict[str, Any] | None
) -> None:
    session.add(AuditEntry(event=event, user_id=user_id, ip=ip, detail=detail))


# --- rate limits (policy: api/ratelimit.py) -------------------------------------------------


def rate_limit_hit(
    session: Session, key: str, window_seconds: int
) -> Row[int, datetime, datetime | None, int, datetime]:
    """Count one hit on ``key``'s fixed window (a new window once the old one ended), atomically
    across replicas. The row: ``hits``, ``reset_at``, ``blocked_until``, ``strikes``, ``now``."""
    now = func.now()
    window = timedelta(seconds=window_seconds)
    bucket = RateLimitBucket
    ended = bucket.reset_at <= now
    statement = (
        insert(bucket)
        .values(key=key, count=1, reset_at=now + window, strikes=0)
        .on_conflict_do_update(
            index_elements=[bucket.key],
            set_={
                "count": case((ended, 1), else_=bucket.count + 1),
                "reset_at": case((ended, now + window), else_=bucket.reset_at),
            },
        )
        .returning(
            bucket.count.label("hits"),
            bucket.reset_at,
            bucket.blocked_until,
            bucket.strikes,
            now.label("now"),
        )
    )
    return session.execute(statement).one()


def rate_limit_block(session: Session, key: str, seconds: int) -> None:
    """Lock ``key`` out for ``seconds`` (one more strike); its window lasts at least as long."""
    until = func.now() + timedelta(seconds=seconds)
    session.execute(
        update(RateLimitBucket)
        .where(RateLimitBucket.key == key)
        .values(
            blocked_until=until,
            strikes=RateLimitBucket.strikes + 1,
            reset_at=func.greatest(RateLimitBucket.reset_at, until),
        )
    )


def rate_limit_state(session: Session, key: str) -> Row[datetime | None, int, datetime] | None:
    """``blocked_until``, ``count`` and ``reset_at`` of ``key``'s window, if it has one."""
    return session.execute(
        select(
            RateLimitBucket.blocked_until, RateLimitBucket.count, RateLimitBucket.reset_at
        ).where(RateLimitBucket.key == key)
    ).first()


def rate_limit_clear(session: Session, key: str) -> None:
    session.execute(delete(RateLimitBucket).where(RateLimitBucket.key == key))


def purge_rate_limits(session: Session) -> int:
    """Delete windows that ended and lockouts that expired; a key that was locked out keeps its
    strike count for a day, so waiting out one lockout does not reset the doubling."""
    result = session.execute(
        delete(RateLimitBucket).where(
            RateLimitBucket.reset_at
            < func.now()
            - case((RateLimitBucket.strikes > 0, timedelta(days=1)), else_=timedelta(seconds=60)),
            (RateLimitBucket.blocked_until.is_(None))
            | (RateLimitBucket.blocked_until < func.now()),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- persistent MQTT sessions (the cap: api/session_cap.py) -----------------------------------


def record_persistent_session(
    session: Session, client_id: str, user_id: str, opened_at: datetime
) -> None:
    """Remember that ``client_id`` (now ``user_id``'s) opened a persistent session."""
    upsert = insert(PersistentMqttSession).values(
        client_id=client_id, user_id=user_id, opened_at=opened_at
    )
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=[PersistentMqttSession.client_id],
            set_={"user_id": user_id, "opened_at": upsert.excluded.opened_at},
        )
    )


def persistent_sessions(session: Session, user_id: str) -> list[tuple[str, datetime]]:
    """(client id, latest CONNECT) of every persistent session recorded for the user."""
    rows = session.execute(
        select(PersistentMqttSession.client_id, PersistentMqttSession.opened_at).where(
            PersistentMqttSession.user_id == user_id
        )
    )
    return [(row.client_id, row.opened_at) for row in rows]


def forget_persistent_session(session: Session, client_id: str, user_id: str) -> datetime | None:
    """Delete the user's record of ``client_id`` (row-locked until commit); when it was
    opened, or None if another replica ended it or it is no longer the user's."""
    return session.scalar(
        delete(PersistentMqttSession)
        .where(
            PersistentMqttSession.client_id == client_id,
            PersistentMqttSession.user_id == user_id,
        )
        .returning(PersistentMqttSession.opened_at)
    )


# --- the account as a whole (DELETE /me, GET /me/export) ------------------------------------


def user_analysis_ids(session: Session, user_id: str) -> list[str]:
    return list(session.scalars(select(Analysis.id).where(Analysis.user_id == user_id)))


def add_retained_clears(session: Session, clear_topics: list[str], expires_at: datetime) -> None:
    """Queue an empty retained publish for each topic (kept until ``expires_at``)."""
    if not clear_topics:
        return
    session.execute(
        insert(RetainedClear)
        .values([{"topic": topic, "expires_at": expires_at} for topic in clear_topics])
        .on_conflict_do_nothing()
    )


def delete_user_content(session: Session, user_id: str) -> tuple[int | None, int | None]:
    """Delete the user's trace steps, events (with what hangs off them), analyses (with their
    images), device tokens and records of persistent MQTT sessions; the numbers of events and
    devices deleted."""
    session.execute(delete(TraceStep).where(TraceStep.user_id == user_id))
    session.execute(delete(PersistentMqttSession).where(PersistentMqttSession.user_id == user_id))
    events = session.execute(delete(EventRow).where(EventRow.user_id == user_id))
    session.execute(delete(Analysis).where(Analysis.user_id == user_id))
    devices = session.execute(delete(Device).where(Device.user_id == user_id))
    return getattr(events, "rowcount", None), getattr(devices, "rowcount", None)


def delete_user(session: Session, user_id: str) -> None:
    session.execute(delete(User).where(User.id == user_id))


def user_analyses(session: Session, user_id: str) -> list[Analysis]:
    return list(
        session.scalars(
            select(Analysis).where(Analysis.user_id == user_id).order_by(Analysis.created_at)
        )
    )


def user_events(session: Session, user_id: str) -> list[EventRow]:
    return list(
        session.scalars(select(EventRow).where(EventRow.user_id == user_id).order_by(EventRow.seq))
    )


def user_devices(session: Session, user_id: str) -> list[Device]:
    return list(session.scalars(select(Device).where(Device.user_id == user_id)))


def user_auth_sessions(session: Session, user_id: str) -> list[AuthSession]:
    return list(
        session.scalars(
            select(AuthSession)
            .where(AuthSession.user_id == user_id)
            .order_by(AuthSession.created_at)
        )
    )


def user_audit_entries(session: Session, user_id: str) -> list[AuditEntry]:
    return list(
        session.scalars(
            select(AuditEntry).where(AuditEntry.user_id == user_id).order_by(AuditEntry.id)
        )
    )
