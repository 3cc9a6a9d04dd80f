"""The worker's side of PostgreSQL: leases on analyses, results, and outbox event rows.

Every state change and the event that announces it commit in one transaction (the outbox);
every write is conditional on this worker still holding the lease, so a worker that lost its
lease (it stalled, someone took over) can never store a second result.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from plantnotify.contracts.events import (
    AnalysisCompleted,
    AnalysisFailed,
    AnalysisProgress,
    AnalysisStatus,
    EventType,
    truncate,
    utcnow,
)
from plantnotify.db.models import Analysis, AnalysisImage, EventRow
from plantnotify.db.session import transaction
from worker import stages
from worker.n8n import N8nAttempt
from worker.presence import owner_alive

log = logging.getLogger("plantnotify.worker.store")

AnyEvent = AnalysisCompleted | AnalysisFailed | AnalysisProgress


class ClaimState(enum.Enum):
    CLAIMED = "claimed"  # the lease is ours: run the analysis
    FINISHED = "finished"  # Completed/Failed already: a redelivery, nothing to do
    HELD = "held"  # a live worker holds the lease: wait, it will finish or die
    UNKNOWN = "unknown"  # no such analysis
    MISMATCH = "mismatch"  # the job names another user than the analysis
    EXHAUSTED = "exhausted"  # it was started too often; now Failed


@dataclass(frozen=True, slots=True)
class Work:
    """What a claimed analysis needs to run."""

    analysis_id: str
    user_id: str
    crop_type: str | None
    mime_type: str
    attempt: int
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    state: ClaimState
    work: Work | None = None
    holder: str | None = None
    events: tuple[AnyEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an analysis ended; ``health`` etc. only for Completed."""

    completed: bool
    result: dict[str, Any] | None = None
    crop_type: str | None = None
    primary_concern: str | None = None
    health: int | None = None
    error_message: str | None = None
    # Each N8N call, recorded with the result for the delivery timeline.
    n8n_attempts: tuple[N8nAttempt, ...] = ()


def _relaxed(session: Session) -> None:
    """This transaction need not wait for the WAL flush: claims and progress stages are
    re-done by the next attempt if a database crash loses them. Results always wait: the job is
    acked after their commit."""
    session.execute(text("SET LOCAL synchronous_commit = off"))


# A result and its event in one statement, one round trip: the UPDATE (conditional on the lease
# still being ours) feeds the event's INSERT, so nothing is stored when the lease was lost.
# Run on an autocommit connection it is its own transaction, committed synchronously (durable
# before the job is acked).
FINISH_SQL = text(
    "WITH done AS ("
    " UPDATE analyses SET status = :status, result = CAST(:result AS jsonb),"
    " crop_type = COALESCE(:crop_type, crop_type), primary_concern = :concern,"
    " overall_health_score = :health, error_message = :error, lease_owner = NULL,"
    " lease_expires_at = NULL, updated_at = :at, completed_at = :at"
    " WHERE id = :id AND status = 'Processing' AND lease_owner = :owner"
    " RETURNING id, user_id),"
    # each N8N attempt, for the delivery timeline (plantnotify/timeline.py), in the same trip
    " attempts AS (INSERT INTO trace_steps (analysis_id, user_id, trace_id, step, at, detail)"
    " SELECT done.id, done.user_id, :trace_id, 'n8n_attempt', a.at, a.detail"
    " FROM done, jsonb_to_recordset(CAST(:attempts AS jsonb)) AS a(at timestamptz, detail jsonb))"
    " INSERT INTO events (id, user_id, analysis_id, type, payload, expires_at)"
    " SELECT :event_id, user_id, id, :type, CAST(:payload AS jsonb), :expires FROM done"
)
# A progress stage, once per analysis, only while the lease is ours. The analysis row is locked
# (FOR UPDATE) as the result's UPDATE locks it, so a stage can never be stored after a result
# committed by a worker that took the lease over. set_config(..., true) makes this one
# statement's transaction commit without waiting for the WAL flush: a stage lost in a database
# crash is recorded again by the next attempt.
PROGRESS_SQL = text(
    "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))"
    " INSERT INTO events (id, user_id, analysis_id, type, payload, expires_at)"
    " SELECT :event_id, :user_id, :analysis_id, :type, CAST(:payload AS jsonb), :expires"
    " FROM relaxed WHERE EXISTS (SELECT 1 FROM analyses WHERE id = :analysis_id"
    " AND status = 'Processing' AND lease_owner = :owner FOR UPDATE)"
    " AND NOT EXISTS (SELECT 1 FROM events WHERE analysis_id = :analysis_id AND type = :type"
    " AND payload->>'stage' = :stage)"
)


def add_event(session: Session, event: AnyEvent, expiry_seconds: int) -> EventRow:
    """Stage ``event`` as an outbox row in the caller's transaction."""
    row = EventRow(
        id=event.event_id,
        user_id=event.user_id,
        analysis_id=event.analysis_id,
        type=str(event.event),
        payload=event.to_wire(),
        expires_at=utcnow() + timedelta(seconds=expiry_seconds),
    )
    session.add(row)
    return row


class JobStore:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        owner: str,
        lease_seconds: float,
        event_expiry_seconds: int,
        image_url: Callable[[str], str],
        max_attempts: int,
    ) -> None:
        self.sessions = sessions
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self.expiry = event_expiry_seconds
        self.image_url = image_url
        self.max_attempts = max_attempts

    # --- claiming ---------------------------------------------------------------------------

    def claim(self, analysis_id: str, user_id: str) -> Claim:
        with transaction(self.sessions) as s:
            _relaxed(s)
            found = s.execute(
                select(Analysis, func.now()).where(Analysis.id == analysis_id).with_for_update()
            ).one_or_none()
            if found is None:
                return Claim(ClaimState.UNKNOWN)
            row, now = found
            if row.user_id != user_id:
                return Claim(ClaimState.MISMATCH)
            if row.status != AnalysisStatus.PROCESSING:
                return Claim(ClaimState.FINISHED)
            holder = row.lease_owner
            if (
                holder is not None
                and holder != self.owner
                and row.lease_expires_at is not None
                and row.lease_expires_at > now
                and owner_alive(s, holder)
            ):
                return Claim(ClaimState.HELD, holder=holder)
            if row.attempts >= self.max_attempts:
                message = (
                    f"The analysis was interrupted {row.attempts} times and was given up; "
                    "please upload the image again."
                )
                # A result: the job is acked after this commit, so it must be durable.
                s.execute(text("SET LOCAL synchronous_commit = on"))
                event = self._finish_row(s, row, Outcome(completed=False, error_message=message))
                return Claim(ClaimState.EXHAUSTED, events=(event,))
            row.lease_owner = self.owner
            row.lease_expires_at = now + self.lease
            row.attempts += 1
            row.updated_at = now
            work = Work(
                row.id, row.user_id, row.crop_type, row.mime_type, row.attempts, row.trace_id
            )
            started = self._progress_row(s, row, 10, "started")
            return Claim(ClaimState.CLAIMED, work=work, events=(started,) if started else ())

    def load_image(self, analysis_id: str) -> bytes | None:
        with self.sessions() as s:
            return s.execute(
                select(AnalysisImage.data).where(AnalysisImage.analysis_id == analysis_id)
            ).scalar_one_or_none()

    # --- progress and results -----------------------------------------------------------------

    def progress(self, work: Work, progress: int, stage: str) -> AnalysisProgress | None:
        """Record a progress stage (once per analysis); None when not ours or already recorded.

        One statement on an autocommit connection (see :data:`PROGRESS_SQL`)."""
        event = AnalysisProgress(
            analysis_id=work.analysis_id,
            user_id=work.user_id,
            trace_id=work.trace_id,
            progress=progress,
            stage=stage,
        )
        params = {
            "event_id": event.event_id,
            "user_id": work.user_id,
            "analysis_id": work.analysis_id,
            "type": str(EventType.PROGRESS),
            "payload": json.dumps(event.to_wire()),
            "expires": utcnow() + timedelta(seconds=self.expiry),
            "owner": self.owner,
            "stage": stage,
        }
        with self._autocommit() as conn:
            stored = conn.execute(PROGRESS_SQL, params).rowcount
        return event if stored else None

    def _autocommit(self) -> Any:
        engine = self.sessions.kw["bind"]
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def finish(self, work: Work, outcome: Outcome) -> AnalysisCompleted | AnalysisFailed | None:
        """Store the result and its event together; None when the lease is no longer ours.

        One statement (UPDATE ... RETURNING feeding the event's INSERT) on an autocommit
        connection: one round trip that is its own transaction, durable (synchronous commit)
        before the caller acks the job. The lease condition is in the UPDATE's WHERE, so a
        worker that lost its lease changes nothing."""
        at: datetime = utcnow()
        stages.record(work.analysis_id, "completed")
        values: dict[str, Any] = {}
        event: AnalysisCompleted | AnalysisFailed
        if outcome.completed:
            crop_type = outcome.crop_type or work.crop_type
            values.update(
                status=AnalysisStatus.COMPLETED,
                result=outcome.result,
                crop_type=crop_type,
                primary_concern=outcome.primary_concern,
                overall_health_score=outcome.health,
                error_message=None,
            )
            event = AnalysisCompleted(
                analysis_id=work.analysis_id,
                user_id=work.user_id,
                trace_id=work.trace_id,
                completed_at=at,
                crop_type=crop_type,
                primary_concern=outcome.primary_concern,
                overall_health_score=outcome.health,
                image_url=self.image_url(work.analysis_id),
            )
        else:
            message = truncate(outcome.error_message or "The analysis failed.", 300)
            values.update(status=AnalysisStatus.FAILED, error_message=message)
            event = AnalysisFailed(
                analysis_id=work.analysis_id,
                user_id=work.user_id,
                trace_id=work.trace_id,
                failed_at=at,
                error_message=message,
            )
        params = {
            "id": work.analysis_id,
            "owner": self.owner,
            "status": str(values["status"]),
            "result": None if values.get("result") is None else json.dumps(values["result"]),
            "crop_type": values.get("crop_type"),
            "concern": values.get("primary_concern"),
            "health": values.get("overall_health_score"),
            "error": values.get("error_message"),
            "at": at,
            "event_id": event.event_id,
            "type": str(event.event),
            "payload": json.dumps(event.to_wire()),
            "expires": utcnow() + timedelta(seconds=self.expiry),
            "trace_id": work.trace_id,
            "attempts": json.dumps(
                [
                    {"at": a.at.isoformat(), "detail": a.detail(number)}
                    for number, a in enumerate(outcome.n8n_attempts, start=1)
                ]
            ),
        }
        with self._autocommit() as conn:
            stored = conn.execute(FINISH_SQL, params).rowcount
        if not stored:
            log.warning("lease lost before storing the result; another worker owns it")
            return None
        return event

    # --- lease upkeep -------------------------------------------------------------------------

    def renew(self, analysis_ids: Iterable[str]) -> int:
        ids = list(analysis_ids)
        if not ids:
            return 0
        with transaction(self.sessions) as s:
            result = s.execute(
                update(Analysis)
                .where(
                    Analysis.id.in_(ids),
                    Analysis.lease_owner == self.owner,
                    Analysis.status == AnalysisStatus.PROCESSING,
                )
                .values(lease_expires_at=func.now() + self.lease)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def release(self, analysis_ids: Iterable[str]) -> int:
        """Give leases back (graceful shutdown); the hand-back does not count as an attempt."""
        ids = list(analysis_ids)
        if not ids:
            return 0
        with transaction(self.sessions) as s:
            result = s.execute(
                update(Analysis)
                .where(
                    Analysis.id.in_(ids),
                    Analysis.lease_owner == self.owner,
                    Analysis.status == AnalysisStatus.PROCESSING,
                )
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=func.greatest(Analysis.attempts - 1, 0),
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    # --- helpers (inside a transaction) -------------------------------------------------------

    def _ours(self, s: Session, analysis_id: str) -> Analysis | None:
        row = s.execute(
            select(Analysis).where(Analysis.id == analysis_id).with_for_update()
        ).scalar_one_or_none()
        if row is None or row.status != AnalysisStatus.PROCESSING or row.lease_owner != self.owner:
            return None
        return row

    def _progress_row(
        self, s: Session, row: Analysis, progress: int, stage: str
    ) -> AnalysisProgress | None:
        seen = s.execute(
            text(
                "SELECT 1 FROM events WHERE analysis_id = :a AND type = :t "
                "AND payload->>'stage' = :s LIMIT 1"
            ),
            {"a": row.id, "t": str(EventType.PROGRESS), "s": stage},
        ).first()
        if seen:
            return None
        event = AnalysisProgress(
            analysis_id=row.id,
            user_id=row.user_id,
            trace_id=row.trace_id,
            progress=progress,
            stage=stage,
        )
        add_event(s, event, self.expiry)
        return event

    def _finish_row(
        self, s: Session, row: Analysis, outcome: Outcome
    ) -> AnalysisCompleted | AnalysisFailed:
        at: datetime = utcnow()
        stages.record(row.id, "completed")
        row.lease_owner = None
        row.lease_expires_at = None
        row.updated_at = at
        row.completed_at = at
        event: AnalysisCompleted | AnalysisFailed
        if outcome.completed:
            row.status = AnalysisStatus.COMPLETED
            row.result = outcome.result
            row.crop_type = outcome.crop_type or row.crop_type
            row.primary_concern = outcome.primary_concern
            row.overall_health_score = outcome.health
            row.error_message = None
            event = AnalysisCompleted(
                analysis_id=row.id,
                user_id=row.user_id,
                trace_id=row.trace_id,
                completed_at=at,
                crop_type=row.crop_type,
                primary_concern=row.primary_concern,
                overall_health_score=row.overall_health_score,
                image_url=self.image_url(row.id),
            )
        else:
            message = truncate(outcome.error_message or "The analysis failed.", 300)
            row.status = AnalysisStatus.FAILED
            row.error_message = message
            event = AnalysisFailed(
                analysis_id=row.id,
                user_id=row.user_id,
                trace_id=row.trace_id,
                failed_at=at,
                error_message=message,
            )
        add_event(s, event, self.expiry)
        return event
