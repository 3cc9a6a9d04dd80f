"""Tables. ``events`` is both the transactional outbox and the history behind /notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Analysis(Base):
    __tablename__ = "analyses"
    __table_args__ = (
        Index("ix_analyses_user_created", "user_id", "created_at"),
        Index(
            "ix_analyses_unqueued",
            "created_at",
            postgresql_where=text("status = 'Processing' AND queued_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    crop_type: Mapped[str | None] = mapped_column(String(64))
    mime_type: Mapped[str] = mapped_column(String(64))
    image_size: Mapped[int] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    primary_concern: Mapped[str | None] = mapped_column(String(200))
    overall_health_score: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    # Worker lease: the job is being analysed by ``lease_owner`` until ``lease_expires_at``;
    # a redelivery while the lease is live is not started twice.
    # The X-Request-ID of the upload: logs of API, worker and bridge carry it (correlation).
    request_id: Mapped[str | None] = mapped_column(String(64))
    # The analysis' trace (W3C trace id, 32 hex digits): in every event and log line of it.
    trace_id: Mapped[str | None] = mapped_column(String(32))
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Set once RabbitMQ confirmed the job. NULL on a Processing analysis older than a minute
    # means the API stopped between its commit and the confirm; the API's requeue sweep
    # publishes such jobs (api/requeue.py), so no analysis waits for a job that never came.
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AnalysisImage(Base):
    """The uploaded bytes, in PostgreSQL so the API and workers need no shared disk."""

    __tablename__ = "analysis_images"

    analysis_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("analyses.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class EventRow(Base):
    """Every event ever emitted. ``published_at IS NULL`` is the outbox."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_user_created", "user_id", "created_at"),
        Index(
            "ix_events_unpublished",
            "seq",
            postgresql_where=text("published_at IS NULL"),
        ),
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)  # the eventId
    user_id: Mapped[str] = mapped_column(String(64))
    analysis_id: Mapped[str] = mapped_column(String(36), index=True)
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Device(Base):
    """An FCM registration token of a user's device."""

    __tablename__ = "devices"

    token: Mapped[str] = mapped_column(String(4096), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- bridge (FCM fallback): decisions, receipts, deliveries and every attempt ----------------


class PushDecision(Base):
    """One per terminal event the bridge has seen published; the pending ones survive restarts.

    ``state``: ``pending`` (waiting until ``due_at``), then exactly one of ``pushed``,
    ``suppressed`` (a receipt), ``no_devices`` or ``ignored``.
    """

    __tablename__ = "push_decisions"
    __table_args__ = (
        Index("ix_push_decisions_due", "due_at", postgresql_where=text("state = 'pending'")),
        Index(
            "ix_push_decisions_user_pending", "user_id", postgresql_where=text("state = 'pending'")
        ),
    )

    event_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(64))
    analysis_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(32))
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    live_at_publish: Mapped[int | None] = mapped_column(Integer)  # NULL: unknown
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16), server_default=text("'pending'"))
    reason: Mapped[str | None] = mapped_column(String(200))
    receipt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PushReceipt(Base):
    """The first receipt for an event from any device of its owner ("this device has it")."""

    __tablename__ = "push_receipts"

    event_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PushDelivery(Base):
    """One push of one event to one device; unique per (event, device): never pushed twice.

    ``status``: ``pending`` (due at ``next_attempt_at``), ``sending`` (leased by a bridge until
    ``next_attempt_at``), then ``sent``, ``device_removed``, ``failed`` or ``exhausted``.
    """

    __tablename__ = "push_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "device_token", name="uq_push_deliveries_event_device"),
        Index(
            "ix_push_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'sending')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("push_decisions.event_id", ondelete="CASCADE")
    )
    user_id: Mapped[str] = mapped_column(String(64))
    device_token: Mapped[str] = mapped_column(String(4096))
    platform: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(300))
    fcm_message_id: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PushAttempt(Base):
    """Every HTTP attempt at FCM and what came of it (operators read this; nothing is guessed)."""

    __tablename__ = "push_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("push_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(300))
    retry_after: Mapped[float | None] = mapped_column(Float)
    bridge: Mapped[str | None] = mapped_column(String(128))


# The bridge's catch-up sweep looks for recently published terminal events without a decision.
Index(
    "ix_events_published_terminal",
    EventRow.published_at,
    postgresql_where=text(
        "published_at IS NOT NULL AND type IN ('AnalysisCompleted', 'AnalysisFailed')"
    ),
)


class OutboxState(Base):
    """Small key/value state of the outbox publisher (e.g. the broker boot it rebuilt for)."""

    __tablename__ = "outbox_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- accounts: login sessions, refresh tokens, revocations, audit log, rate limits ------------


class AuthSession(Base):
    """One login (a device): its refresh tokens form one family; revoking it ends them all.

    Access tokens carry the session id (``sid``) and are refused once the session is revoked
    or gone (the user was deleted); MQTT tokens minted with them carry it too.
    """

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    user_agent: Mapped[str | None] = mapped_column(String(200))


class RefreshToken(Base):
    """A refresh token, stored as its SHA-256 only. Spent once used; a spent one used again
    revokes its whole session (someone holds a copy)."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    spent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replaced_by: Mapped[str | None] = mapped_column(String(64))


class Revocation(Base):
    """What the broker must refuse, kept until every token it covers has expired.

    ``session_id`` set: tokens of that login session; otherwise every token of ``user_id``
    issued before ``not_before``. The database is the source of truth: the API pushes new rows
    to the broker at once and the whole unexpired set after each broker boot.
    """

    __tablename__ = "revocations"
    __table_args__ = (Index("ix_revocations_expires", "expires_at"),)

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    session_id: Mapped[str | None] = mapped_column(String(36))
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """Security-relevant account events: logins, failed logins, revocations, deletions,
    device tokens moving between users. Never holds passwords or tokens."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_user_at", "user_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    event: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class PersistentMqttSession(Base):
    """A client id whose MQTT session outlives its connection, as the broker plugin reported it
    (``PersistentSessionOpened``); the API keeps at most MQTT_MAX_PERSISTENT_SESSIONS_PER_USER
    of them per user (api/session_cap.py)."""

    __tablename__ = "mqtt_persistent_sessions"
    __table_args__ = (Index("ix_mqtt_persistent_sessions_user_opened", "user_id", "opened_at"),)

    client_id: Mapped[str] = mapped_column(String(130), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # its latest CONNECT


class RateLimitBucket(Base):
    """One fixed-window counter shared by every API replica (``key`` names limit and subject)."""

    __tablename__ = "rate_limits"
    __table_args__ = (Index("ix_rate_limits_reset", "reset_at"),)

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    reset_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    strikes: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class RuntimeSetting(Base):
    """Settings changed while running, read by the API on every use (``plantnotify rollout``)."""

    __tablename__ = "runtime_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class TraceStep(Base):
    """What the delivery timeline needs beyond the other tables: N8N attempts, every receipt.

    ``step``: ``n8n_attempt`` (detail: attempt, outcome, seconds, error) or ``receipt`` (one per
    device and event; detail: transport, deviceReceivedAt, latencyMs). Kept
    ``TRACE_RETENTION_DAYS``.
    """

    __tablename__ = "trace_steps"
    __table_args__ = (
        Index("ix_trace_steps_analysis_at", "analysis_id", "at"),
        Index("ix_trace_steps_user_at", "user_id", "at"),
        Index("ix_trace_steps_at", "at"),
        # One receipt row per (event, device): QoS 1 may deliver a receipt twice.
        Index(
            "uq_trace_steps_receipt",
            "event_id",
            "device",
            unique=True,
            postgresql_where=text("step = 'delivered'"),
            postgresql_nulls_not_distinct=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    analysis_id: Mapped[str] = mapped_column(String(36))
    user_id: Mapped[str] = mapped_column(String(64))
    trace_id: Mapped[str | None] = mapped_column(String(32))
    step: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event_id: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(130))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class RetainedClear(Base):
    """A retained MQTT topic of a deleted account that the broker must drop (an empty retained
    publish). Kept until its events would have expired anyway, and sent again after every
    broker boot: a broker restored from an older persistence file forgets the clear."""

    __tablename__ = "retained_clears"

    topic: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
