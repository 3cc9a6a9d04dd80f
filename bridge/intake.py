"""Intake: what makes a push decision exist or fall due.

* events: terminal events come in two ways into the same idempotent insert, the live MQTT
  publication (fast; retained replays on subscribe are skipped) and a sweep of the ``events``
  table (durable; finds whatever was published while this bridge was away or disconnected);
* receipts: a device confirmed an event (accepted only from its owner): its decision is due now;
* sessions: a user went offline (or was found offline once in sync): their pending decisions are
  due now.

Each returns True when something fell due, so that the loop settles it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from opentelemetry.trace import SpanKind

from bridge import metrics
from bridge.decision import first_due
from bridge.store import EventRef, NewDecision, ReceiptResult, Store
from plantnotify.contracts.events import (
    PUSHABLE_EVENTS,
    InvalidPayload,
    parse_event,
    parse_receipt,
)
from plantnotify.contracts.ids import is_valid_client_id
from plantnotify.mqtt import Message
from plantnotify.tracing import resume, span

log = logging.getLogger("plantnotify.bridge")

SWEEP_BATCH = 1000  # events taken in per sweep query (a backlog is swept pass after pass)


class Intake:
    def __init__(
        self,
        store: Store,
        live: Callable[[str], int | None],
        *,
        grace: timedelta,
        lookback: timedelta,
    ) -> None:
        self.store = store
        self._live = live
        self.grace = grace
        self.lookback = lookback
        self._arrivals: list[tuple[str, str, str]] = []  # (eventId, userId, analysisId)

    # --- events -------------------------------------------------------------------------------

    def event(self, user_id: str, analysis_id: str, msg: Message) -> None:
        """An event published on ``users/{user_id}/analyses/{analysis_id}``: kept for
        :meth:`take_in_arrivals` when it is a new, well-formed terminal event."""
        if msg.retain:
            return  # a replay on (re)subscribe, not a new publication; the sweep covers gaps
        try:
            event = parse_event(msg.payload)
        except InvalidPayload as exc:
            log.warning("event ignored: %s", exc, extra={"user_id": user_id})
            return
        if event.event not in PUSHABLE_EVENTS:
            return  # progress events never cause a push
        if event.user_id != user_id or event.analysis_id != analysis_id:
            log.warning("event on a topic that does not match its body ignored")
            return
        self._arrivals.append((event.event_id, user_id, analysis_id))

    def forget_arrivals(self) -> None:
        """After a database error: the sweep finds them again from the events table."""
        self._arrivals.clear()

    def take_in_arrivals(self, now: datetime) -> bool:
        """The events that arrived over MQTT since the last call, checked against the database
        (the worker commits the row before it publishes): one query and one insert per batch."""
        if not self._arrivals:
            return False
        arrivals, self._arrivals = self._arrivals, []
        refs = self.store.events([eid for eid, _, _ in arrivals])
        good = []
        for eid, uid, aid in arrivals:
            ref = refs.get(eid)
            if ref is None or ref.user_id != uid or ref.analysis_id != aid:
                log.warning("event not in the database ignored", extra={"user_id": uid})
            elif ref.type in PUSHABLE_EVENTS:
                good.append(ref)
        return self._take_in(good, now)

    def sweep(self, now: datetime, limit: int = SWEEP_BATCH) -> tuple[bool, bool]:
        """Terminal events published but not taken in (this bridge was away, or MQTT missed
        them). Returns (something new, a full batch: a backlog, sweep again at once)."""
        refs = self.store.unseen_published(now - self.lookback, limit=limit)
        return self._take_in(refs, now), len(refs) >= limit

    def _take_in(self, refs: Sequence[EventRef], now: datetime) -> bool:
        rows = []
        for ref in refs:
            published = min(now, ref.published_at) if ref.published_at is not None else now
            if published < now - self.lookback:
                continue
            live = self._live(ref.user_id)
            rows.append(
                NewDecision(ref, published, live, first_due(published, now, self.grace, live))
            )
        created = self.store.create_decisions(rows)
        for r in rows:
            if r.ref.event_id in created:
                log.debug(
                    "event taken in",
                    extra={
                        "event_id": r.ref.event_id,
                        "user_id": r.ref.user_id,
                        "live": r.live_at_publish,
                        "wait_s": round((r.due_at - now).total_seconds(), 3),
                    },
                )
        return bool(created)

    # --- receipts -----------------------------------------------------------------------------

    def receipt(self, user_id: str, payload: bytes, now: datetime) -> bool:
        try:
            receipt = parse_receipt(payload)
        except InvalidPayload as exc:
            metrics.RECEIPTS.labels("malformed").inc()
            log.warning("receipt ignored: %s", exc, extra={"user_id": user_id})
            return False
        if "\x00" in receipt.event_id:
            metrics.RECEIPTS.labels("malformed").inc()
            log.warning("receipt ignored: NUL in eventId", extra={"user_id": user_id})
            return False
        if receipt.client_id is not None and not is_valid_client_id(user_id, receipt.client_id):
            receipt = receipt.model_copy(update={"client_id": None})  # not this user's device
        recorded = self.store.record_receipt(user_id, receipt, now)
        result = recorded.result
        metrics.RECEIPTS.labels(str(result)).inc()
        if recorded.latency_seconds is not None and receipt.transport is not None:
            metrics.DELIVERY_LATENCY.labels(str(receipt.transport)).observe(
                recorded.latency_seconds
            )
        with span(
            "receipt",
            resume(recorded.trace_id),
            kind=SpanKind.CONSUMER,
            result=str(result),
            transport=receipt.transport,
            latency_ms=None
            if recorded.latency_seconds is None
            else round(recorded.latency_seconds * 1000, 1),
        ):
            pass  # a point on the trace: this device has the event
        if result is ReceiptResult.FOREIGN:
            log.warning(
                "receipt for an event this user does not own ignored", extra={"user_id": user_id}
            )
            return False
        return True

    # --- sessions -----------------------------------------------------------------------------

    def went_offline(self, user_id: str, now: datetime) -> bool:
        """The user's last session closed: a pending decision need not wait for its grace."""
        if self.store.expedite([user_id], now):
            log.info("user went offline during a grace period", extra={"user_id": user_id})
            return True
        return False

    def in_sync(self, now: datetime) -> bool:
        """Just in sync with the broker: pending decisions of users who went offline while we
        were not looking are due now."""
        offline = [u for u in self.store.pending_users() if self._live(u) == 0]
        return bool(self.store.expedite(offline, now))
