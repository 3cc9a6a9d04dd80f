"""Senders: a pipeline that leases due deliveries, sends them with firebase-admin's synchronous
API from ``FCM_CONCURRENCY`` threads and records every attempt, whatever happens.

* one claimer thread leases due deliveries in batches (one transaction for up to
  ``CLAIM_BATCH``) and keeps a short queue of them ahead of the senders;
* ``FCM_CONCURRENCY`` sender threads only send: a push never waits for a database round trip,
  so as many are in flight at FCM as firebase-admin alone would have;
* one recorder thread stores the attempts in batches, one durable transaction for all that
  finished meanwhile (one WAL flush instead of one per push).

The loop wakes the claimer when it created deliveries or a retry fell due. A delivery is leased
before it is sent and reported with a fence on the attempt number (see :mod:`bridge.store`): an
attempt reported after its lease ran out is stored but counted by the delivery's new holder (as
``unknown``), never twice. A lease that could run out before its send ends is given back unsent,
and leases still queued when the bridge stops are given back too: two sends of one delivery
never overlap, and each (event, device) is sent once unless a bridge dies mid-send.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from firebase_admin import messaging
from opentelemetry.trace import SpanKind
from sqlalchemy.exc import DBAPIError

from bridge import metrics
from bridge.fcm import SendResult, build_message, classify, device_ref
from bridge.retry import Outcome, RetryPolicy, next_step
from bridge.store import Attempt, Claim, Store
from plantnotify.contracts.events import AnalysisCompleted, AnalysisFailed, parse_event
from plantnotify.logs import log_context
from plantnotify.tracing import resume, span

log = logging.getLogger("plantnotify.bridge")

# Deliveries leased in one transaction; the queue ahead of the senders holds at most
# QUEUE_PER_SENDER per sender thread (a lease waits there milliseconds, never near its end).
CLAIM_BATCH = 64
QUEUE_PER_SENDER = 2
# Attempts stored in one transaction at most (whatever finished while the last one committed).
RECORD_BATCH = 128


def count_metric(name: str, label: str, value: float = 1.0) -> None:
    """One metric update of the sending pipeline, in this process's registry."""
    if name == "pushes":
        metrics.PUSHES.labels(label).inc(value)
    elif name == "deliveries":
        metrics.DELIVERIES.labels(label).inc(value)
    elif name == "push_latency":
        metrics.PUSH_LATENCY.observe(value)
    elif name == "config_errors":
        metrics.CONFIG_ERRORS.inc(value)


class Sender(Protocol):
    def send(self, message: messaging.Message) -> SendResult: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Done:
    """A send that finished (``attempt``) or a lease given back unsent (``release``)."""

    claim: Claim
    attempt: Attempt | None = None


_STOP: Any = object()


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
        self._senders: list[threading.Thread] = []
        self._recorder: threading.Thread | None = None
        self._work = threading.Condition()
        self._work_seq = 0
        self._queue_max = max(1, concurrency * QUEUE_PER_SENDER)
        self._claims: queue.Queue[Claim] = queue.Queue()
        self._done: queue.Queue[Any] = queue.Queue()
        # Where the pipeline's metrics go: this process's (a sender process relays them).
        self.count: Callable[..., None] = count_metric

    def start(self) -> None:
        claimer = threading.Thread(target=self._claim_loop, name="fcm-claim", daemon=True)
        self._senders = [
            threading.Thread(target=self._send_loop, name=f"fcm-send-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        self._recorder = threading.Thread(target=self._record_loop, name="fcm-record", daemon=True)
        self._threads = [claimer, *self._senders]
        for t in [*self._threads, self._recorder]:
            t.start()

    def join(self, timeout: float) -> None:
        """After the stop event is set: in-flight sends finish and are recorded, leases still
        queued are given back."""
        self.wake()
        for t in self._threads:
            t.join(timeout)
        self._done.put(_STOP)
        if self._recorder is not None:
            self._recorder.join(timeout)
        self._threads, self._senders, self._recorder = [], [], None

    def wake(self) -> None:
        with self._work:
            self._work_seq += 1
            self._work.notify_all()

    # --- the pipeline ---------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        """Lease due deliveries while the queue has room; sleep when none is due. Reading the
        wake-up counter before claiming means no wake-up is ever missed."""
        with log_context(bridge=self.store.instance):
            while not self._stop.is_set():
                with self._work:
                    seen = self._work_seq
                room = self._queue_max - self._claims.qsize()
                if room > 0:
                    want = min(room, CLAIM_BATCH)
                    try:
                        claims = self.store.claim_deliveries(utcnow(), self.lease, want)
                    except DBAPIError as exc:
                        log.error("database error leasing pushes; retrying in 1 s: %s", exc.orig)
                        self._stop.wait(1.0)
                        continue
                    for claim in claims:
                        self._claims.put(claim)
                    if len(claims) == want:
                        continue  # there may be more due
                with self._work:
                    while self._work_seq == seen and not self._stop.is_set():
                        # A full queue frees up within milliseconds: look again soon.
                        self._work.wait(timeout=5.0 if room > 0 else 0.01)
                        if room <= 0:
                            break

    def _send_loop(self) -> None:
        with log_context(bridge=self.store.instance):
            while True:
                try:
                    claim = self._claims.get(timeout=0.2)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                if self._stop.is_set():
                    self._done.put(_Done(claim))  # leased but not sent: give it back
                    continue
                try:
                    self._done.put(self._deliver(claim))
                except Exception:
                    log.exception("a push failed unexpectedly; its lease will expire and retry")

    def _record_loop(self) -> None:
        with log_context(bridge=self.store.instance):
            stopping = False
            while not stopping:
                batch: list[_Done] = []
                item = self._done.get()
                while True:
                    if item is _STOP:
                        stopping = True
                    else:
                        batch.append(item)
                    if len(batch) >= RECORD_BATCH:
                        break
                    try:
                        item = self._done.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    self._record(batch)

    def _record(self, batch: list[_Done]) -> None:
        attempts = [d.attempt for d in batch if d.attempt is not None]
        try:
            for d in batch:
                if d.attempt is None:
                    self.store.release(d.claim, utcnow())
            owned = self.store.record_attempts(attempts)
        except Exception:
            log.exception(
                "recording %d push attempts failed; their leases will expire and retry",
                len(attempts),
            )
            return
        for a, mine in zip(attempts, owned, strict=True):
            self._report(a, mine)

    # --- one delivery ---------------------------------------------------------------------------

    def _deliver(self, claim: Claim) -> _Done:
        """Send one leased delivery. A lease that could run out during the send is given back
        unsent: another bridge may take it then, and two sends of one delivery must never
        overlap."""
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
            if utcnow() + self.lease / 2 >= claim.lease_until:
                return _Done(claim)
            return _Done(claim, self._attempt(claim))

    def attempt(self, claim: Claim) -> None:
        """Send and record one attempt, here and now (what the pipeline does in three threads)."""
        self._record([_Done(claim, self._attempt(claim))])

    def _attempt(self, claim: Claim) -> Attempt:
        started = utcnow()
        result = self._send(claim)
        finished = utcnow()
        step = next_step(
            self.policy,
            result.outcome,
            attempts=claim.attempt,
            age=(finished - claim.created_at).total_seconds(),
            retry_after=result.retry_after,
        )
        return Attempt(
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

    def _report(self, a: Attempt, owned: bool) -> None:
        """Metrics and logs of one recorded attempt."""
        claim, step = a.claim, a.step
        with log_context(
            event_id=claim.event_id,
            user_id=claim.user_id,
            analysis_id=claim.analysis_id,
            request_id=claim.request_id,
            trace_id=claim.payload.get("traceId"),
        ):
            if claim.lost_previous:
                self.count("pushes", "unknown")  # the lost attempt (see the store)
            extra: dict[str, Any] = {
                "device": device_ref(claim.device_token),
                "attempt": claim.attempt,
                "outcome": str(a.outcome),
                "status": str(step.status),
            }
            if not owned:
                # Our lease ran out mid-send and another holder took the delivery: it counted
                # this attempt as "unknown" and owns what happens next. Counting it here too
                # would count one attempt twice (and a delivery's final state twice).
                log.warning(
                    "push attempt reported after its lease was lost; not counted", extra=extra
                )
                return
            self.count("pushes", str(a.outcome))
            if step.retry_in is None:
                self.count("deliveries", str(step.status))
            if a.outcome is Outcome.SENT:
                if claim.published_at is not None:
                    self.count(
                        "push_latency",
                        "",
                        max(0.0, (a.finished - claim.published_at).total_seconds()),
                    )
                log.info("push sent", extra=extra)
            elif a.outcome is Outcome.CONFIG:
                self.count("config_errors", "")
                log.error(
                    "FCM configuration problem (check FCM_CREDENTIALS_FILE / FCM_ENDPOINT / the "
                    "project): %s; the device is kept and the push retried in %.0fs",
                    a.detail,
                    step.retry_in or 0,
                    extra=extra,
                )
            elif a.outcome is Outcome.DEVICE_GONE:
                log.info("device token no longer valid; device removed", extra=extra)
            else:
                log.warning(
                    "push not delivered: %s %s",
                    a.error_code,
                    a.detail,
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
