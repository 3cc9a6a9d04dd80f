"""Senders: ``FCM_CONCURRENCY`` threads that each lease due deliveries, send them with
firebase-admin's synchronous API and record every attempt, whatever happens.

The loop wakes them when it created deliveries or a retry fell due. A delivery is leased before
it is sent and reported with a fence on the attempt number (see :mod:`bridge.store`): an attempt
reported after its lease ran out is stored but counted by the delivery's new holder (as
``unknown``), never twice.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from firebase_admin import messaging
from opentelemetry.trace import SpanKind
from sqlalchemy.exc import DBAPIError

from bridge import metrics
from bridge.fcm import SendResult, build_message, classify, device_ref
from bridge.retry import Outcome, RetryPolicy, next_step
from bridge.store import Claim, Store
from plantnotify.contracts.events import AnalysisCompleted, AnalysisFailed, parse_event
from plantnotify.logs import log_context
from plantnotify.tracing import resume, span

log = logging.getLogger("plantnotify.bridge")

# Deliveries one sender thread leases at once (one transaction instead of four); far below
# what a lease covers: each send is bounded by FCM_HTTP_TIMEOUT_SECONDS.
CLAIM_BATCH = 4


class Sender(Protocol):
    def send(self, message: messaging.Message) -> SendResult: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


class Senders:
    def __init__(
        self,
        store: Store,
        sender: Sender,
        policy: RetryPolicy,
        *,
        lease: timedelta,
        concurrency: int,
        ttl_seconds: int,
        web_base_url: str | None,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.policy = policy
        self.lease = lease
        self.concurrency = concurrency
        self.ttl_seconds = ttl_seconds
        self.web_base_url = web_base_url
        self._stop = stop or threading.Event()
        self._threads: list[threading.Thread] = []
        self._work = threading.Condition()
        self._work_seq = 0

    def start(self) -> None:
        for n in range(self.concurrency):
            t = threading.Thread(target=self._run, name=f"fcm-send-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def join(self, timeout: float) -> None:
        """After the stop event is set: in-flight sends finish and are recorded."""
        self.wake()
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def wake(self) -> None:
        with self._work:
            self._work_seq += 1
            self._work.notify_all()

    def _run(self) -> None:
        """A sender thread: lease due deliveries, send them, record them; sleep when none is due.
        Reading the wake-up counter before claiming means no wake-up is ever missed."""
        with log_context(bridge=self.store.instance):
            while not self._stop.is_set():
                with self._work:
                    seen = self._work_seq
                try:
                    claims = self.store.claim_deliveries(utcnow(), self.lease, CLAIM_BATCH)
                except DBAPIError as exc:
                    log.error("database error leasing a push; retrying in 1 s: %s", exc.orig)
                    self._stop.wait(1.0)
                    continue
                if claims:
                    for claim in claims:  # sent even if we are stopping: they are leased
                        self.deliver(claim)
                    continue
                with self._work:
                    while self._work_seq == seen and not self._stop.is_set():
                        self._work.wait(timeout=5.0)

    def deliver(self, claim: Claim) -> None:
        """One attempt at FCM, recorded in the database whatever happens. A lease that could run
        out during the send is given back unsent: another bridge may take it then, and two
        sends of one delivery must never overlap."""
        trace_id = claim.payload.get("traceId")
        with (
            log_context(
                event_id=claim.event_id,
                user_id=claim.user_id,
                analysis_id=claim.analysis_id,
                request_id=claim.request_id,
                trace_id=trace_id,
            ),
            span(
                "push",
                resume(trace_id),
                kind=SpanKind.CLIENT,
                platform=claim.platform,
                attempt=claim.attempt,
            ),
        ):
            try:
                if utcnow() + self.lease / 2 >= claim.lease_until:
                    self.store.release(claim, utcnow())
                    return
                self.attempt(claim)
            except Exception:
                log.exception("recording a push attempt failed; its lease will expire and retry")

    def attempt(self, claim: Claim) -> None:
        started = utcnow()
        if claim.lost_previous:
            metrics.PUSHES.labels("unknown").inc()  # the lost attempt (see the store)
        result = self._send(claim)
        finished = utcnow()
        step = next_step(
            self.policy,
            result.outcome,
            attempts=claim.attempt,
            age=(finished - claim.created_at).total_seconds(),
            retry_after=result.retry_after,
        )
        owned = self.store.record_attempt(
            claim,
            outcome=result.outcome,
            step=step,
            started=started,
            finished=finished,
            http_status=result.http_status,
            error_code=result.error_code,
            detail=result.detail or None,
            retry_after=result.retry_after,
            message_id=result.message_id,
        )
        extra: dict[str, Any] = {
            "device": device_ref(claim.device_token),
            "attempt": claim.attempt,
            "outcome": str(result.outcome),
            "status": str(step.status),
        }
        if not owned:
            # Our lease ran out mid-send and another holder took the delivery: it counted this
            # attempt as "unknown" and owns what happens next. Counting it here too would
            # count one attempt twice (and a delivery's final state twice).
            log.warning("push attempt reported after its lease was lost; not counted", extra=extra)
            return
        metrics.PUSHES.labels(str(result.outcome)).inc()
        if step.retry_in is None:
            metrics.DELIVERIES.labels(str(step.status)).inc()
        if result.outcome is Outcome.SENT:
            if claim.published_at is not None:
                metrics.PUSH_LATENCY.observe(
                    max(0.0, (finished - claim.published_at).total_seconds())
                )
            log.info("push sent", extra=extra)
        elif result.outcome is Outcome.CONFIG:
            metrics.CONFIG_ERRORS.inc()
            log.error(
                "FCM configuration problem (check FCM_CREDENTIALS_FILE / FCM_ENDPOINT / the "
                "project): %s; the device is kept and the push retried in %.0fs",
                result.detail,
                step.retry_in or 0,
                extra=extra,
            )
        elif result.outcome is Outcome.DEVICE_GONE:
            log.info("device token no longer valid; device removed", extra=extra)
        else:
            log.warning(
                "push not delivered: %s %s",
                result.error_code,
                result.detail,
                extra={**extra, "retry_in": step.retry_in},
            )

    def _send(self, claim: Claim) -> SendResult:
        try:
            event = parse_event(claim.payload)
            if not isinstance(event, AnalysisCompleted | AnalysisFailed):
                return SendResult(Outcome.FAILED, error_code="NOT_PUSHABLE")
            message = build_message(
                event,
                claim.device_token,
                ttl_seconds=self.ttl_seconds,
                web_base_url=self.web_base_url,
            )
            return self.sender.send(message)
        except Exception as exc:
            return classify(exc)
