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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg2
from psycopg2.extensions import cursor as Cursor
from sqlalchemy import (
    BigInteger,
    ClauseElement,
    DateTime,
    Engine,
    Integer,
    Interval,
    String,
    Text,
    any_,
    bindparam,
    case,
    cast,
    column,
    extract,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
    values,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.psycopg2 import dialect as psycopg2_dialect
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
from plantnotify.db.models import Analysis, AnalysisImage, EventRow, OutboxState, TraceStep
from plantnotify.db.session import (
    commit_with_flush_wait,
    commit_without_flush_wait,
    transaction,
)
from worker import stages
from worker.n8n import N8nAttempt
from worker.presence import OUTBOX_LOCK_CLASS, PRESENCE_LOCK_CLASS, owner_key

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
    # Read by the usual claim (which then also recorded the "analyzing" stage when there is an
    # image); the slow claim leaves them to load_image() and progress().
    preloaded: bool = field(default=False, compare=False)
    image: bytes | None = field(default=None, repr=False, compare=False)


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
    commit_without_flush_wait(session)


_PROCESSING = str(AnalysisStatus.PROCESSING)
_EVENT_COLUMNS = ["id", "user_id", "analysis_id", "type", "payload", "expires_at"]


def _json(name: str) -> Any:
    """A JSON document passed as text (``json.dumps``), stored as jsonb."""
    return cast(bindparam(name, type_=Text), JSONB)


def _stage_seen(analysis_id: Any, stage: Any) -> Any:
    """EXISTS: a progress event of this stage is stored for the analysis."""
    return (
        select(EventRow.seq)
        .where(
            EventRow.analysis_id == analysis_id,
            EventRow.type == str(EventType.PROGRESS),
            EventRow.payload["stage"].astext == stage,
        )
        .exists()
    )


# A result and its event in one statement, one round trip: the UPDATE (conditional on the lease
# still being ours) feeds the event's INSERT, so nothing is stored when the lease was lost.
# Run on an autocommit connection it is its own transaction, committed synchronously (durable
# before the job is acked).
_finished = (
    update(Analysis)
    .where(
        Analysis.id == bindparam("analysis"),
        Analysis.status == _PROCESSING,
        Analysis.lease_owner == bindparam("owner"),
    )
    .values(
        status=bindparam("new_status"),
        result=_json("new_result"),
        crop_type=func.coalesce(bindparam("crop_hint", type_=String), Analysis.crop_type),
        primary_concern=bindparam("concern"),
        overall_health_score=bindparam("health"),
        error_message=bindparam("error"),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=bindparam("done_at"),
        completed_at=bindparam("done_at"),
    )
    .returning(Analysis.id, Analysis.user_id)
    .cte("done")
)
# Each N8N attempt, for the delivery timeline (plantnotify/timeline.py), in the same trip.
_n8n_attempts = (
    func.jsonb_to_recordset(_json("n8n_attempts"))
    .table_valued(column("at", DateTime(timezone=True)), column("detail", JSONB))
    .render_derived(name="a", with_types=True)
)
_attempts_recorded = (
    insert(TraceStep)
    .from_select(
        ["analysis_id", "user_id", "trace_id", "step", "at", "detail"],
        select(
            _finished.c.id,
            _finished.c.user_id,
            bindparam("trace", type_=String),
            literal_column("'n8n_attempt'"),
            _n8n_attempts.c.at,
            _n8n_attempts.c.detail,
        ).select_from(_finished.join(_n8n_attempts, true())),
    )
    .cte("attempts")
)
FINISH = (
    insert(EventRow)
    .from_select(
        _EVENT_COLUMNS,
        select(
            bindparam("event_id", type_=String),
            _finished.c.user_id,
            _finished.c.id,
            bindparam("event_type", type_=String),
            _json("event_payload"),
            bindparam("expires", type_=DateTime(timezone=True)),
        ),
    )
    .add_cte(_attempts_recorded)
)
# A progress stage, once per analysis, only while the lease is ours. The analysis row is locked
# (FOR UPDATE) as the result's UPDATE locks it, so a stage can never be stored after a result
# committed by a worker that took the lease over. set_config(..., true) makes this one
# statement's transaction commit without waiting for the WAL flush: a stage lost in a database
# crash is recorded again by the next attempt.
_relaxed_commit = select(
    func.set_config(
        literal_column("'synchronous_commit'"), literal_column("'off'"), literal_column("true")
    ).label("setting")
).cte("relaxed")
PROGRESS = insert(EventRow).from_select(
    _EVENT_COLUMNS,
    select(
        bindparam("event_id", type_=String),
        bindparam("event_user", type_=String),
        bindparam("analysis", type_=String),
        literal(str(EventType.PROGRESS)),
        _json("event_payload"),
        bindparam("expires", type_=DateTime(timezone=True)),
    )
    .select_from(_relaxed_commit)
    .where(
        select(Analysis.id)
        .where(
            Analysis.id == bindparam("analysis"),
            Analysis.status == _PROCESSING,
            Analysis.lease_owner == bindparam("owner"),
        )
        .with_for_update()
        .exists(),
        ~_stage_seen(bindparam("analysis"), bindparam("stage")),
    ),
)

# The usual claim in one statement (one round trip, no ORM): the analysis is ours to run
# (Processing, the job's user, attempts left) and nobody else holds a live lease on it: take
# the lease, count the attempt, and store the "started" stage once. Like every claim it
# commits without waiting for the WAL flush (the next attempt re-does a lost one). When it
# changes nothing, the full claim (JobStore.claim) finds out why: unknown, finished, held by
# a live worker or by a dead one, attempts used up.
_claimed = (
    update(Analysis)
    .where(
        Analysis.id == bindparam("analysis"),
        Analysis.user_id == bindparam("user"),
        Analysis.status == _PROCESSING,
        Analysis.attempts < bindparam("max_attempts"),
        or_(
            Analysis.lease_owner.is_(None),
            Analysis.lease_owner == bindparam("owner"),
            Analysis.lease_expires_at.is_(None),
            Analysis.lease_expires_at <= func.now(),
        ),
        select(_relaxed_commit.c.setting).scalar_subquery().is_not(None),
    )
    .values(
        lease_owner=bindparam("owner"),
        lease_expires_at=func.now() + bindparam("lease", type_=Interval),
        attempts=Analysis.attempts + 1,
        updated_at=func.now(),
    )
    .returning(
        Analysis.id,
        Analysis.user_id,
        Analysis.crop_type,
        Analysis.mime_type,
        Analysis.attempts,
        Analysis.trace_id,
    )
    .cte("claimed")
)
# The claim also reads the image and, when there is one, records the "analyzing" stage (the N8N
# call comes next): the usual job is then two round trips in all, this one and the result's.
# Both stages come from one INSERT ... SELECT ordered by stage, so "started" gets the lower seq
# (the outbox publishes an analysis' events in seq order); each is stored once per analysis.
_image = (
    select(AnalysisImage.data).where(AnalysisImage.analysis_id == _claimed.c.id).scalar_subquery()
)
_stage_rows = values(
    column("ord", Integer),
    column("stage", String),
    column("event_id", String),
    column("payload", Text),
    name="s",
).data(
    [
        (
            literal_column("1"),
            literal_column("'started'"),
            bindparam("event_id", type_=String),
            bindparam("event_payload", type_=Text),
        ),
        (
            literal_column("2"),
            literal_column("'analyzing'"),
            bindparam("analyzing_id", type_=String),
            bindparam("analyzing_payload", type_=Text),
        ),
    ]
)
# The stage's payload gets the analysis' stored trace id, as AnalysisProgress.to_wire() has it.
_stage_payload = cast(_stage_rows.c.payload, JSONB).op("||")(
    case(
        (_claimed.c.trace_id.is_(None), cast(literal_column("'{}'"), JSONB)),
        else_=func.jsonb_build_object(literal_column("'traceId'"), _claimed.c.trace_id),
    )
)
_started = (
    insert(EventRow)
    .from_select(
        _EVENT_COLUMNS,
        select(
            _stage_rows.c.event_id,
            _claimed.c.user_id,
            _claimed.c.id,
            literal_column(f"'{EventType.PROGRESS}'"),
            _stage_payload,
            bindparam("expires", type_=DateTime(timezone=True)),
        )
        .select_from(_claimed.join(_stage_rows, true()))
        .where(
            ~_stage_seen(_claimed.c.id, _stage_rows.c.stage),
            or_(
                _stage_rows.c.ord == literal_column("1"),
                select(AnalysisImage.analysis_id)
                .where(AnalysisImage.analysis_id == _claimed.c.id)
                .exists(),
            ),
        )
        .order_by(_stage_rows.c.ord),
    )
    .returning(EventRow.payload["stage"].astext.label("stage"))
    .cte("started")
)
CLAIM = select(
    _claimed.c.id,
    _claimed.c.user_id,
    _claimed.c.crop_type,
    _claimed.c.mime_type,
    _claimed.c.attempts,
    _claimed.c.trace_id,
    _image.label("image"),
    select(func.array_agg(_started.c.stage)).scalar_subquery().label("stages"),
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


# --- the job path's statements, compiled once ----------------------------------------------------
#
# A job runs two statements (the claim, the result), three with a slow claim. Run through a
# SQLAlchemy Connection each costs more CPU in the worker than the round trip itself (cache key,
# parameter processing, result wrapping); compiled once here for psycopg2 and run on a pooled
# connection's own cursor they cost what the driver costs. The pool is still SQLAlchemy's (its
# pre-ping of idle connections, its replacement of dead ones).


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled for psycopg2 and the values SQLAlchemy bound in it (constants)."""

    sql: str
    constants: dict[str, Any]

    @classmethod
    def of(cls, statement: ClauseElement) -> Prepared:
        compiled = statement.compile(dialect=_PSYCOPG2)
        for name, value in compiled.params.items():
            assert value is None or isinstance(value, str | int), f"{name}: {value!r}"
        return cls(str(compiled), dict(compiled.params))

    def params(self, given: dict[str, Any]) -> dict[str, Any]:
        return {**self.constants, **given}


_PSYCOPG2 = psycopg2_dialect()  # type: ignore[no-untyped-call]
_CLAIM = Prepared.of(CLAIM)
_FINISH = Prepared.of(FINISH)
_PROGRESS = Prepared.of(PROGRESS)
_IMAGE = Prepared.of(
    select(AnalysisImage.data).where(AnalysisImage.analysis_id == bindparam("analysis"))
)


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
        statements: Engine | None = None,
    ) -> None:
        """``statements``: an autocommit engine for the one-statement writes and reads (no
        transaction to open or to reset; see ``make_engine(autocommit=True)``)."""
        self.sessions = sessions
        self._statements = statements
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self.expiry = event_expiry_seconds
        self.image_url = image_url
        self.max_attempts = max_attempts

    # --- claiming ---------------------------------------------------------------------------

    def claim(self, analysis_id: str, user_id: str) -> Claim:
        quick = self._claim_at_once(analysis_id, user_id)
        if quick is not None:
            return quick
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
                commit_with_flush_wait(s)
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

    def _claim_at_once(self, analysis_id: str, user_id: str) -> Claim | None:
        """The usual claim as one statement (:data:`CLAIM`); None when it did not apply."""
        started = AnalysisProgress(
            analysis_id=analysis_id, user_id=user_id, progress=10, stage="started"
        )
        analyzing = AnalysisProgress(
            analysis_id=analysis_id, user_id=user_id, progress=50, stage="analyzing"
        )
        params = {
            "analysis": analysis_id,
            "user": user_id,
            "owner": self.owner,
            "max_attempts": self.max_attempts,
            "lease": self.lease,
            "event_id": started.event_id,
            "event_payload": json.dumps(started.to_wire()),
            "analyzing_id": analyzing.event_id,
            "analyzing_payload": json.dumps(analyzing.to_wire()),
            "expires": utcnow() + timedelta(seconds=self.expiry),
        }
        row = self._execute(_CLAIM, params, fetch=True)
        if row is None:
            return None
        analysis, user, crop_type, mime_type, attempts, trace_id, image, stored = row
        image = bytes(image) if image is not None else None
        work = Work(
            analysis, user, crop_type, mime_type, attempts, trace_id, preloaded=True, image=image
        )
        recorded = {"started": started, "analyzing": analyzing}
        events = tuple(
            recorded[stage].model_copy(update={"trace_id": trace_id}) for stage in stored or ()
        )
        return Claim(ClaimState.CLAIMED, work=work, events=events)

    def load_image(self, analysis_id: str) -> bytes | None:
        row = self._execute(_IMAGE, {"analysis": analysis_id}, fetch=True)
        return None if row is None else bytes(row[0])

    def _execute(self, statement: Prepared, params: dict[str, Any], *, fetch: bool) -> Any:
        """Run one statement as its own transaction on a pooled connection: its first row
        (``fetch``) or its row count."""
        engine = self._statements if self._statements is not None else self.sessions.kw["bind"]
        conn = engine.raw_connection()
        try:
            cur = conn.cursor()
            try:
                cur.execute(statement.sql, statement.params(params))
                out = cur.fetchone() if fetch else cur.rowcount
            finally:
                cur.close()
            if self._statements is None:
                conn.commit()
            return out
        except psycopg2.Error as exc:
            if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
                conn.invalidate(exc)  # a dead connection is not handed out again
            raise
        finally:
            conn.close()  # back to the pool

    # --- progress and results -----------------------------------------------------------------

    def progress(self, work: Work, progress: int, stage: str) -> AnalysisProgress | None:
        """Record a progress stage (once per analysis); None when not ours or already recorded.

        One statement on an autocommit connection (see :data:`PROGRESS`)."""
        event = AnalysisProgress(
            analysis_id=work.analysis_id,
            user_id=work.user_id,
            trace_id=work.trace_id,
            progress=progress,
            stage=stage,
        )
        params = {
            "event_id": event.event_id,
            "event_user": work.user_id,
            "analysis": work.analysis_id,
            "event_payload": json.dumps(event.to_wire()),
            "expires": utcnow() + timedelta(seconds=self.expiry),
            "owner": self.owner,
            "stage": stage,
        }
        stored = self._execute(_PROGRESS, params, fetch=False)
        return event if stored else None

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
            "analysis": work.analysis_id,
            "owner": self.owner,
            "new_status": str(values["status"]),
            "new_result": None if values.get("result") is None else json.dumps(values["result"]),
            "crop_hint": values.get("crop_type"),
            "concern": values.get("primary_concern"),
            "health": values.get("overall_health_score"),
            "error": values.get("error_message"),
            "done_at": at,
            "event_id": event.event_id,
            "event_type": str(event.event),
            "event_payload": json.dumps(event.to_wire()),
            "expires": utcnow() + timedelta(seconds=self.expiry),
            "trace": work.trace_id,
            "n8n_attempts": json.dumps(
                [
                    {"at": a.at.isoformat(), "detail": a.detail(number)}
                    for number, a in enumerate(outcome.n8n_attempts, start=1)
                ]
            ),
        }
        stored = self._execute(_FINISH, params, fetch=False)
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
        if s.scalar(select(_stage_seen(row.id, stage))):
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


# --- the outbox publisher's connection --------------------------------------------------------
#
# The publisher (worker/outbox.py) works on a raw psycopg2 connection of its own: it holds the
# session-level advisory locks that say which process leads which partition, and LISTENs for
# new events. Its queries run on that same session on purpose: when the connection (and so the
# lock) is lost, the next query fails, and a deposed leader cannot publish out of order. The
# lock and LISTEN calls are PostgreSQL features written as SQL, behind the names below; every
# other query is a statement on the models like the rest of this module, compiled once for
# psycopg2 (at import) and run on the publisher's cursor.

EVENTS_CHANNEL = "plantnotify_events"  # spelled in migration worker01 (the trigger) as well
REBUILT_BOOT_KEY = "rebuilt_boot_id"  # + "/p<k>": the boot whose state partition k rebuilt
MEMBER_LOCK_KEY = 1  # shared by every publisher (the old single leader held it exclusively)
PARTITION_KEY_BASE = 100  # partition k's leader lock: (OUTBOX_LOCK_CLASS, 100 + k)
OUTBOX_PARTITIONS = 8  # fixed: every process must agree, so it is not a setting


def _compiled(statement: ClauseElement) -> str:
    """SQL for a psycopg2 cursor: every parameter must be a named ``bindparam`` (given at
    execution), none a value SQLAlchemy would have bound by itself."""
    compiled = statement.compile(dialect=_PSYCOPG2)
    bound = [name for name, value in compiled.params.items() if value is not None]
    assert not bound, f"values bound at compile time: {bound}"
    return str(compiled)


def _partition(analysis_id: Any) -> Any:
    """An event's partition: mod(hashtext(analysis_id) & 2147483647, OUTBOX_PARTITIONS)."""
    positive = func.hashtext(analysis_id).op("&")(literal_column("2147483647"))
    return func.mod(positive, literal_column(str(OUTBOX_PARTITIONS)))


_EXPIRES_IN = extract("epoch", EventRow.expires_at - func.now())
_AGE = extract("epoch", func.now() - EventRow.created_at)
_UNPUBLISHED = _compiled(
    select(
        EventRow.seq,
        EventRow.user_id,
        EventRow.analysis_id,
        EventRow.payload,
        _EXPIRES_IN,
        _AGE,
        _partition(EventRow.analysis_id),
    )
    .where(
        EventRow.published_at.is_(None),
        EventRow.seq > bindparam("after_seq"),
        _partition(EventRow.analysis_id) == any_(bindparam("partitions", type_=ARRAY(BigInteger))),
    )
    .order_by(EventRow.seq)
    .limit(bindparam("limit"))
)
# Losing this mark in a database crash only means publishing again (clients de-duplicate on
# eventId), so its commit need not wait for the WAL flush (set_config(..., true): this
# statement's transaction only).
_MARK_PUBLISHED = _compiled(
    update(EventRow)
    .where(
        EventRow.seq == any_(bindparam("seqs", type_=ARRAY(BigInteger))),
        _relaxed_commit.c.setting.is_not(None),
    )
    .values(published_at=func.now())
)
_LAG = _compiled(
    select(_AGE)
    .where(EventRow.published_at.is_(None))
    .order_by(EventRow.seq)
    .limit(bindparam("limit"))
)
_STATE = _compiled(
    select(OutboxState.key, OutboxState.value).where(
        OutboxState.key == any_(bindparam("keys", type_=ARRAY(String)))
    )
)
_upsert = pg_insert(OutboxState).values(
    key=bindparam("key"), value=bindparam("value"), updated_at=func.now()
)
_SET_STATE = _compiled(
    _upsert.on_conflict_do_update(
        index_elements=[OutboxState.key],
        set_={"value": _upsert.excluded.value, "updated_at": func.now()},
    )
)
_LATEST = _compiled(
    select(
        EventRow.seq,
        EventRow.user_id,
        EventRow.analysis_id,
        EventRow.payload,
        _EXPIRES_IN,
        literal_column("0"),
        _partition(EventRow.analysis_id),
    )
    .ext(distinct_on(EventRow.analysis_id))
    .where(
        EventRow.published_at.is_not(None),
        EventRow.expires_at > func.now(),
        EventRow.analysis_id > bindparam("after"),
        _partition(EventRow.analysis_id) == bindparam("partition"),
    )
    .order_by(EventRow.analysis_id, EventRow.seq.desc())
    .limit(bindparam("limit"))
)


def owner_alive(session: Session, owner: str) -> bool:
    """True while the worker that wrote ``owner`` still holds its presence lock.

    An owner id of a shape we don't know counts as alive: only its lease expiry frees it.
    """
    key = owner_key(owner)
    if key is None:
        return True
    held = session.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
            "AND classid = CAST(:c AS oid) AND objid = CAST(:k AS oid) AND objsubid = 2 "
            "AND granted)"
        ),
        {"c": PRESENCE_LOCK_CLASS, "k": key},
    ).scalar()
    return bool(held)


def sql_join(cur: Cursor) -> bool:
    """Become a member (shared lock); False while an old-style single leader holds it."""
    cur.execute("SELECT pg_try_advisory_lock_shared(%s, %s)", (OUTBOX_LOCK_CLASS, MEMBER_LOCK_KEY))
    row = cur.fetchone()
    return bool(row and row[0])


def sql_listen(cur: Cursor) -> None:
    """Be told (NOTIFY, at commit) when events are added."""
    cur.execute(f"LISTEN {EVENTS_CHANNEL}")


def sql_members(cur: Cursor) -> int:
    cur.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND classid = %s AND objid = %s AND objsubid = 2",
        (OUTBOX_LOCK_CLASS, MEMBER_LOCK_KEY),
    )
    row = cur.fetchone()
    return int(row[0]) if row else 1


def sql_try_partition(cur: Cursor, k: int) -> bool:
    cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (OUTBOX_LOCK_CLASS, PARTITION_KEY_BASE + k))
    row = cur.fetchone()
    return bool(row and row[0])


def sql_release_partition(cur: Cursor, k: int) -> None:
    cur.execute("SELECT pg_advisory_unlock(%s, %s)", (OUTBOX_LOCK_CLASS, PARTITION_KEY_BASE + k))


def sql_fetch_unpublished(
    cur: Cursor, partitions: list[int], after_seq: int, limit: int
) -> list[tuple[Any, ...]]:
    cur.execute(_UNPUBLISHED, {"after_seq": after_seq, "partitions": partitions, "limit": limit})
    return list(cur.fetchall())


def sql_mark_published(cur: Cursor, seqs: list[int]) -> None:
    cur.execute(_MARK_PUBLISHED, {"seqs": seqs})


def sql_lag_seconds(cur: Cursor) -> float:
    cur.execute(_LAG, {"limit": 1})
    row = cur.fetchone()
    return float(row[0]) if row else 0.0


def sql_state(cur: Cursor, keys: list[str]) -> dict[str, str]:
    """Values of ``outbox_state`` keys (those that are set)."""
    cur.execute(_STATE, {"keys": keys})
    return dict(cur.fetchall())


def sql_set_state(cur: Cursor, key: str, value: str) -> None:
    cur.execute(_SET_STATE, {"key": key, "value": value})


def sql_rebuilt_boots(cur: Cursor, partitions: list[int]) -> dict[int, str]:
    keys = {f"{REBUILT_BOOT_KEY}/p{k}": k for k in partitions}
    return {keys[key]: value for key, value in sql_state(cur, list(keys)).items()}


def sql_set_rebuilt_boot(cur: Cursor, partition: int, boot: str) -> None:
    sql_set_state(cur, f"{REBUILT_BOOT_KEY}/p{partition}", boot)


def sql_fetch_latest(
    cur: Cursor, partition: int, after_analysis: str, limit: int
) -> list[tuple[Any, ...]]:
    """The newest published, unexpired event of each analysis of a partition (keyset)."""
    cur.execute(_LATEST, {"partition": partition, "after": after_analysis, "limit": limit})
    return list(cur.fetchall())


# --- the retained-expiry sweeper's connection (worker/retained_expiry.py) ----------------------
#
# The same arrangement as the publisher: its own connection holds the sweeper's advisory lock,
# and its queries run there.

_EXPIRED_PUBLISHED = _compiled(
    select(EventRow.seq, EventRow.user_id, EventRow.analysis_id)
    .where(
        EventRow.seq > bindparam("after_seq"),
        EventRow.expires_at <= func.now(),
        EventRow.published_at.is_not(None),
    )
    .order_by(EventRow.seq)
    .limit(bindparam("limit"))
)
_WITH_LIVE_EVENTS = _compiled(
    select(EventRow.analysis_id)
    .distinct()
    .where(
        EventRow.analysis_id == any_(bindparam("analyses", type_=ARRAY(String))),
        EventRow.expires_at > func.now(),
    )
)


def sql_try_lock(cur: Cursor, key: int) -> bool:
    """Take the session-level advisory lock ``(OUTBOX_LOCK_CLASS, key)`` if it is free."""
    cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (OUTBOX_LOCK_CLASS, key))
    row = cur.fetchone()
    return bool(row and row[0])


def sql_expired_published(cur: Cursor, after_seq: int, limit: int) -> list[tuple[Any, ...]]:
    """(seq, user_id, analysis_id) of published events that expired, after ``after_seq``."""
    cur.execute(_EXPIRED_PUBLISHED, {"after_seq": after_seq, "limit": limit})
    return list(cur.fetchall())


def sql_with_live_events(cur: Cursor, analysis_ids: list[str]) -> set[str]:
    """Those of the analyses that still have an unexpired event."""
    cur.execute(_WITH_LIVE_EVENTS, {"analyses": analysis_ids})
    return {row[0] for row in cur.fetchall()}
