"""The job of every upload reaches RabbitMQ, even when the API dies at the wrong moment.

An upload commits the analysis, publishes the job, then stamps ``queued_at``. A process killed
between the commit and the confirm leaves a ``Processing`` analysis without ``queued_at`` whose
job no worker will ever see. Every API instance sweeps for those (older than a grace period, so
an upload in flight is never touched) and publishes their jobs. Each row is locked with
``SKIP LOCKED`` while its job is published, so two API instances never both take it; a job
published twice anyway (a crash after the confirm, before the stamp) is harmless: the worker
skips an analysis that is leased or finished. (An upload answered 503 because the database
failed too, right after RabbitMQ refused the job, is left unqueued and is published here once
both are back: it gets analysed although its client was told to retry.)
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from api import store
from plantnotify.amqp.publisher import JobPublisher
from plantnotify.contracts.events import AnalysisStatus
from plantnotify.contracts.queues import AnalysisJob
from plantnotify.logs import get_logger
from plantnotify.tracing import resume

log = get_logger("plantnotify.api.requeue")

REQUEUE_GRACE_SECONDS = 60.0
REQUEUE_INTERVAL_SECONDS = 30.0
BATCH = 100

_PROCESSING = AnalysisStatus.PROCESSING.value


def mark_queued(sessions: sessionmaker[Session], analysis_id: str) -> None:
    with sessions() as session, session.begin():
        store.mark_queued(session, analysis_id)


def requeue_unqueued(
    sessions: sessionmaker[Session],
    publisher: JobPublisher,
    *,
    grace_seconds: float = REQUEUE_GRACE_SECONDS,
    limit: int = BATCH,
) -> int:
    """Publish the jobs of analyses that were stored but never confirmed queued.

    Returns how many were published; ``QueueUnavailable`` propagates (the next sweep retries).
    """
    with sessions() as session:
        candidates = store.unqueued_analyses(session, grace_seconds, limit)
    published = 0
    for analysis_id in candidates:
        with sessions() as session, session.begin():
            row = store.lock_unqueued(session, analysis_id, grace_seconds)
            if row is None:
                continue  # queued meanwhile, finished, or another API instance has it
            trace = resume(row.trace_id)
            publisher.publish(
                AnalysisJob(
                    analysis_id=row.id,
                    user_id=row.user_id,
                    request_id=row.request_id,
                    traceparent=trace.traceparent if trace else None,
                )
            )
            store.mark_queued(session, row.id)
        published += 1
        log.warning(
            "queued the job of an analysis whose upload never confirmed it",
            extra={"analysis_id": analysis_id},
        )
    return published
