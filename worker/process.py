"""One job, start to finish: claim the analysis, call N8N, store the result with its event.

The answer for the consumer is a :class:`Verdict`: ack (the result or a redelivery's no-op is
committed), dead-letter (the job can never run) or hand back (shutting down; RabbitMQ
redelivers). A job never acks before its state change is committed.

Duplicate deliveries: a finished analysis is acked without calling N8N; one being analysed by a
live worker (its lease, and its presence lock in PostgreSQL) is *waited for*, not started again
and not acked early: if that worker dies, this delivery takes the job over at once, and if it
finishes, this one is acked as a no-op.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.trace import SpanKind

from plantnotify.contracts.queues import AnalysisJob
from plantnotify.logs import current_context, log_context
from plantnotify.tracing import parse_traceparent, resume, span
from worker import faults, metrics, stages
from worker.n8n import Cancelled, N8nAnswer, N8nClient, N8nRequest
from worker.store import ClaimState, JobStore, Outcome, Work

log = logging.getLogger("plantnotify.worker.process")


class Verdict(enum.Enum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"
    HAND_BACK = "hand_back"


@dataclass(frozen=True, slots=True)
class Result:
    verdict: Verdict
    reason: str = ""


class JobProcessor:
    def __init__(
        self,
        store: JobStore,
        n8n: N8nClient,
        *,
        wake_outbox: Callable[[], None],
        cancel: threading.Event,
        image_url: Callable[[str], str],
        poll_seconds: float,
        unknown_grace_seconds: float,
    ) -> None:
        self.store = store
        self.n8n = n8n
        self.wake_outbox = wake_outbox
        self.cancel = cancel
        self.image_url = image_url
        self.poll = poll_seconds
        self.unknown_grace = unknown_grace_seconds
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a local job ended
        self._running: set[str] = set()

    def running(self) -> list[str]:
        """Analyses whose lease this process holds right now."""
        with self._lock:
            return list(self._running)

    def process(self, job: AnalysisJob) -> Result:
        trace = parse_traceparent(job.traceparent)
        with (
            log_context(
                request_id=job.request_id,
                analysis_id=job.analysis_id,
                user_id=job.user_id,
                trace_id=trace.trace_id if trace else None,
            ),
            span("analysis", trace, kind=SpanKind.CONSUMER, analysis_id=job.analysis_id),
        ):
            try:
                return self._process(job)
            except Cancelled:
                metrics.JOBS.labels(outcome="handed_back").inc()
                return Result(Verdict.HAND_BACK, "shutting down")

    # --- the steps ----------------------------------------------------------------------

    def _process(self, job: AnalysisJob) -> Result:
        work = self._claim(job)
        if isinstance(work, Result):
            return work
        metrics.JOBS_IN_FLIGHT.inc()
        try:
            if "trace_id" in current_context() or work.trace_id is None:
                return self._run(work)
            # A job without trace headers (queued by an older API): the stored trace id.
            with (
                log_context(trace_id=work.trace_id),
                span("analysis", resume(work.trace_id), kind=SpanKind.CONSUMER),
            ):
                return self._run(work)
        except Cancelled:
            self.store.release([work.analysis_id])
            raise
        finally:
            self._unreserve(work.analysis_id)
            metrics.JOBS_IN_FLIGHT.dec()

    def _reserve(self, analysis_id: str) -> bool:
        """One job per analysis in this process: the check and the mark are one step."""
        with self._lock:
            if analysis_id in self._running:
                return False
            self._running.add(analysis_id)
            return True

    def _unreserve(self, analysis_id: str) -> None:
        with self._lock:
            self._running.discard(analysis_id)
            self._changed.notify_all()

    def _pause(self) -> None:
        """Wait before claiming again: ``poll`` seconds, or less when a local job ends."""
        deadline = time.monotonic() + self.poll
        with self._changed:
            while not self.cancel.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or self._changed.wait(min(left, 0.2)):
                    return
        raise Cancelled("shutting down while waiting for another worker")

    def _claim(self, job: AnalysisJob) -> Work | Result:
        first_seen = time.monotonic()
        announced_wait = False
        while True:
            if self._reserve(job.analysis_id):
                try:
                    claim = self.store.claim(job.analysis_id, job.user_id)
                except BaseException:
                    self._unreserve(job.analysis_id)
                    raise
                if claim.state is not ClaimState.CLAIMED:
                    self._unreserve(job.analysis_id)
                if claim.events:
                    self.wake_outbox()
                match claim.state:
                    case ClaimState.CLAIMED:
                        assert claim.work is not None
                        # The first attempt is the usual case, and its result line says it
                        # all; a retried analysis is worth a line at INFO.
                        log.log(
                            logging.INFO if claim.work.attempt > 1 else logging.DEBUG,
                            "analysis claimed (attempt %d)",
                            claim.work.attempt,
                        )
                        return claim.work
                    case ClaimState.FINISHED:
                        log.info("analysis already finished; acking the redelivery")
                        metrics.JOBS.labels(outcome="finished_before").inc()
                        return Result(Verdict.ACK, "already finished")
                    case ClaimState.EXHAUSTED:
                        log.warning("analysis started too often; marked Failed")
                        metrics.JOBS.labels(outcome="failed").inc()
                        return Result(Verdict.ACK, "attempts exhausted")
                    case ClaimState.MISMATCH:
                        metrics.JOBS.labels(outcome="dead_lettered").inc()
                        return Result(
                            Verdict.DEAD_LETTER, "the job's userId does not own the analysis"
                        )
                    case ClaimState.UNKNOWN:
                        # The API may still be committing the row it queued the job for.
                        if time.monotonic() - first_seen >= self.unknown_grace:
                            metrics.JOBS.labels(outcome="dead_lettered").inc()
                            return Result(Verdict.DEAD_LETTER, "no such analysis")
                    case ClaimState.HELD:
                        if not announced_wait:
                            log.info(
                                "analysis is being worked on by live worker %s; waiting for it",
                                claim.holder,
                            )
                            announced_wait = True
            self._pause()

    def _run(self, work: Work) -> Result:
        # The usual claim read the image and recorded "analyzing" with it; a slow one did not.
        image = work.image if work.preloaded else self.store.load_image(work.analysis_id)
        if image is None:
            outcome = Outcome(
                completed=False, error_message="The uploaded image is missing; upload it again."
            )
            return self._finish(work, outcome)
        if not work.preloaded and self.store.progress(work, 50, "analyzing"):
            self.wake_outbox()
        request = N8nRequest(
            analysis_id=work.analysis_id,
            user_id=work.user_id,
            crop_type=work.crop_type,
            mime_type=work.mime_type,
            image=image,
            image_url=self.image_url(work.analysis_id),
        )
        answer = self.n8n.analyse(request, self.cancel)
        if isinstance(answer, N8nAnswer):
            # No separate "saving" stage: it would last one commit and cost the Completed event
            # an extra outbox round trip (measured in bench/scripts/outbox.py).
            outcome = Outcome(
                completed=True,
                result=answer.result,
                crop_type=answer.crop_type,
                primary_concern=answer.primary_concern,
                health=answer.overall_health_score,
                n8n_attempts=answer.history,
            )
        else:
            log.warning("N8N failed for good: %s", answer.message)
            outcome = Outcome(
                completed=False, error_message=answer.message, n8n_attempts=answer.history
            )
        return self._finish(work, outcome)

    def _finish(self, work: Work, outcome: Outcome) -> Result:
        event = self.store.finish(work, outcome)
        stages.record(work.analysis_id, "committed")
        if event is None:
            # Someone else took the lease over (we stalled past it); their result stands.
            metrics.JOBS.labels(outcome="held_elsewhere").inc()
            return Result(Verdict.ACK, "lease lost; another worker owns the analysis")
        faults.after_result_commit()
        self.wake_outbox()
        status = "completed" if outcome.completed else "failed"
        metrics.JOBS.labels(outcome=status).inc()
        log.info("analysis %s", status, extra={"event_id": event.event_id})
        return Result(Verdict.ACK, status)
