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

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from opentelemetry.trace import SpanKind

from bridge import metrics
from bridge.decision import first_due
from bridge.store import EventRef, NewDecision, ReceiptResult, Store
from plantnotify.contracts.events import (
    PUSHABLE_EVENTS,
    EventType,
    InvalidPayload,
    parse_receipt,
)
from plantnotify.contracts.ids import is_valid_client_id
from plantnotify.mqtt import Message
from plantnotify.tracing import resume, span

log = logging.getLogger("plantnotify.bridge")

SWEEP_BATCH = 1000  # events taken in per sweep query (a backlog is swept pass after pass)
SWEEP_MARGIN = timedelta(seconds=10)  # an incremental sweep re-reads this much of the last one
FULL_SWEEP_SECONDS = 60.0  # how often a sweep walks the whole look-back window
ARRIVALS_BATCH = 2000  # MQTT arrivals checked and inserted per statement
# Cheap pre-filter on the raw payload: only terminal events are parsed at all.
_COMPLETED = f'"{EventType.COMPLETED}"'.encode()
_FAILED = f'"{EventType.FAILED}"'.encode()


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
        # (eventId, userId, analysisId): appended on the MQTT thread, taken on the loop's.
        self._arrivals: deque[tuple[str, str, str]] = deque()
        # The same, for users with no live session when their event arrived: each is a push to
        # decide at once, so these are taken in (and settled) before any online user's event.
        self._urgent: deque[tuple[str, str, str]] = deque()
        self._swept_until: datetime | None = None  # a complete sweep saw everything up to here
        self._next_full_sweep = 0.0

    # --- events -------------------------------------------------------------------------------

    def event(self, user_id: str, analysis_id: str, msg: Message) -> bool:
        """An event published on ``users/{user_id}/analyses/{analysis_id}``: kept for
        :meth:`take_in_arrivals` when it is a new, well-formed terminal event (True).

        Called on the MQTT client's thread, for every event of every user: it only reads the
        few fields it needs (no model validation; the database row, checked in
        :meth:`take_in_arrivals`, is the truth) and hands them over."""
        if msg.retain:
            return False  # a replay on (re)subscribe, not a new publication; the sweep covers gaps
        payload = msg.payload
        if _COMPLETED not in payload and _FAILED not in payload:
            return False  # progress events never cause a push
        try:
            body = json.loads(payload)
            event_id, event_type = body["eventId"], body["event"]
            same = body["userId"] == user_id and body["analysisId"] == analysis_id
        except (ValueError, TypeError, KeyError):
            log.warning("event ignored: not a well-formed event", extra={"user_id": user_id})
            return False
        if event_type not in PUSHABLE_EVENTS or not isinstance(event_id, str) or not event_id:
            return False
        if not same:
            log.warning("event on a topic that does not match its body ignored")
            return False
        if self._live(user_id) == 0:
            self._urgent.append((event_id, user_id, analysis_id))
        else:
            self._arrivals.append((event_id, user_id, analysis_id))
        return True

    def forget_arrivals(self) -> None:
        """After a database error: the sweep finds them again from the events table."""
        self._urgent.clear()
        self._arrivals.clear()

    def take_in_urgent(self, now: datetime) -> datetime | None:
        """Like :meth:`take_in_arrivals`, for the events of users who were offline when they
        arrived only: the loop takes these in and settles them before the online users' events,
        so an offline user's push never waits behind thousands of events that are not due for
        a grace period anyway."""
        return self._take_in_queued(self._urgent, ARRIVALS_BATCH, now)

    def take_in_arrivals(self, now: datetime, limit: int = ARRIVALS_BATCH) -> datetime | None:
        """The events that arrived over MQTT since the last call (offline users' first), checked
        against the database (the worker commits the row before it publishes): one query and
        one insert per batch of at most ``limit``. Returns when the earliest of them falls due
        (None: nothing new)."""
        due = self._take_in_queued(self._urgent, limit, now)
        later = self.take_in_online(now, limit)
        if later is not None and (due is None or later < due):
            due = later
        return due

    def take_in_online(self, now: datetime, limit: int = ARRIVALS_BATCH) -> datetime | None:
        """The events of users who were live when they arrived, at most ``limit`` of them: their
        decisions fall due when the grace period ends (or the user goes offline)."""
        return self._take_in_queued(self._arrivals, limit, now)

    def _take_in_queued(
        self, queued: deque[tuple[str, str, str]], limit: int, now: datetime
    ) -> datetime | None:
        arrivals: list[tuple[str, str, str]] = []
        while queued and len(arrivals) < limit:
            arrivals.append(queued.popleft())
        if not arrivals:
            return None
        refs = self.store.events([eid for eid, _, _ in arrivals])
        good = []
        for eid, uid, aid in arrivals:
            ref = refs.get(eid)
            if ref is None or ref.user_id != uid or ref.analysis_id != aid:
                log.warning("event not in the database ignored", extra={"user_id": uid})
            elif ref.type in PUSHABLE_EVENTS:
                good.append(ref)
        return self._take_in(good, now)

    @property
    def arrivals_waiting(self) -> bool:
        return bool(self._arrivals) or bool(self._urgent)

    def sweep(self, now: datetime, limit: int = SWEEP_BATCH) -> tuple[datetime | None, bool]:
        """Terminal events published but not taken in (this bridge was away, or MQTT missed
        them). Returns (when the earliest new one falls due, a full batch: a backlog, sweep
        again at once).

        Most sweeps look back only ``SWEEP_MARGIN`` before the previous complete one: walking
        the whole look-back window (every event of the last hour, nearly all of them taken in
        long ago) twice a second is what made the bridge fall behind under load. Every
        ``FULL_SWEEP_SECONDS`` (and at start) a sweep covers the whole window, for anything
        that became visible later than the margin allows."""
        mono = time.monotonic()
        full = self._swept_until is None or mono >= self._next_full_sweep
        since = now - self.lookback
        if not full and self._swept_until is not None:
            since = max(since, self._swept_until - SWEEP_MARGIN)
        refs = self.store.unseen_published(since, limit=limit)
        backlog = len(refs) >= limit
        if not backlog:
            self._swept_until = now  # everything published up to now was seen
            if full:
                self._next_full_sweep = mono + FULL_SWEEP_SECONDS
        return self._take_in(refs, now), backlog

    def _take_in(self, refs: Sequence[EventRef], now: datetime) -> datetime | None:
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
        earliest: datetime | None = None
        for r in rows:
            if r.ref.event_id in created:
                if earliest is None or r.due_at < earliest:
                    earliest = r.due_at
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "event taken in",
                        extra={
                            "event_id": r.ref.event_id,
                            "user_id": r.ref.user_id,
                            "live": r.live_at_publish,
                            "wait_s": round((r.due_at - now).total_seconds(), 3),
                        },
                    )
        return earliest

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

    def went_offline(self, user_ids: Sequence[str], now: datetime) -> bool:
        """The users' last sessions closed: their pending decisions need not wait for their
        grace periods (one statement for all of them)."""
        n = self.store.expedite(list(dict.fromkeys(user_ids)), now)
        if n:
            log.info("%d pending decisions of users who went offline are due now", n)
        return bool(n)

    def in_sync(self, now: datetime) -> bool:
        """Just in sync with the broker: pending decisions of users who went offline while we
        were not looking are due now."""
        offline = [u for u in self.store.pending_users() if self._live(u) == 0]
        return bool(self.store.expedite(offline, now))
