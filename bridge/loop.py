"""The scheduling loop: the one thread that owns the session picture and does all deciding.

Each wake-up takes a batch of MQTT messages and connection changes from the inbox and routes
them (presence, receipts, events), then takes in the batch's events, sweeps the ``events`` table
now and then, and settles the decisions that fell due: :func:`bridge.decision.decide` runs there,
once per due decision. Deliveries it creates wake the senders.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DBAPIError

from bridge import metrics
from bridge.decision import DecisionState
from bridge.intake import Intake
from bridge.presence import PresenceSource
from bridge.senders import Senders
from bridge.store import Store
from plantnotify.contracts.topics import parse_topic
from plantnotify.mqtt import ConnectionState, Message

log = logging.getLogger("plantnotify.bridge")

# After a start, no decision is settled until the bridge has been in sync once (bounded): the
# receipts the broker kept in our persistent session while we were away are read first.
STARTUP_HOLD_SECONDS = 10.0
MAX_BATCH = 500


@dataclass(frozen=True, slots=True)
class Item:
    kind: str  # "msg" | "state" | "wake"
    message: Message | None = None
    state: ConnectionState | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


class Loop:
    def __init__(
        self,
        *,
        store: Store,
        presence: PresenceSource,
        intake: Intake,
        senders: Senders,
        grace: timedelta,
        poll: float,
        stop: threading.Event,
    ) -> None:
        self.store = store
        self.presence = presence
        self.intake = intake
        self.senders = senders
        self.grace = grace
        self.poll = poll
        self.inbox: queue.Queue[Item] = queue.Queue()
        self._stop = stop
        self._dirty = True  # something may have fallen due: settle at once
        self._next_check = 0.0
        self._next_sweep = 0.0
        self._synced_once = False
        self._hold_until = 0.0

    def put(self, item: Item) -> None:
        """Any thread: hand a message, a connection change or a wake-up to the loop."""
        self.inbox.put(item)

    def run(self) -> None:
        self._hold_until = time.monotonic() + STARTUP_HOLD_SECONDS
        while not self._stop.is_set():
            try:
                item: Item | None = self.inbox.get(timeout=self._wait_time())
            except queue.Empty:
                item = None
            batch = [item] if item is not None else []
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            for it in batch:
                self._handle(it)
            if self._stop.is_set():
                break
            try:
                if self.intake.take_in_arrivals(utcnow()):
                    self._dirty = True
                if self.presence.sync_step():
                    self._in_sync()
                mono = time.monotonic()
                if mono >= self._next_sweep:
                    self._next_sweep = mono + self.poll
                    created, backlog = self.intake.sweep(utcnow())
                    self._dirty = self._dirty or created
                    if backlog:  # sweep again on the next pass, not after a poll
                        self._next_sweep = time.monotonic()
                if self._dirty or mono >= self._next_check:
                    self._dirty = False
                    self._tick()
            except DBAPIError as exc:
                log.error("database error in the bridge loop; retrying in 1 s: %s", exc.orig)
                self.intake.forget_arrivals()
                self._next_check = time.monotonic() + 1.0
                self._stop.wait(1.0)

    def _wait_time(self) -> float:
        if self._dirty:
            return 0.02
        soon = self.presence.wants_wake
        if soon is not None:
            return soon
        deadline = min(self._next_check, self._next_sweep)
        return max(0.0, min(self.poll, deadline - time.monotonic()))

    # --- routing --------------------------------------------------------------------------------

    def _handle(self, item: Item) -> None:
        """One inbox item. A database failure here loses at most a receipt (the push then
        happens: the safe side) or an event's fast path (the sweep finds it again)."""
        try:
            if item.kind == "state":
                self.presence.connection_changed(item.state)
            elif item.kind == "msg" and item.message is not None:
                self._route(item.message)
        except DBAPIError as exc:
            log.error("database error handling a message; it is dropped: %s", exc.orig)
        except Exception:
            log.exception("unexpected error handling %s; ignored", item.kind)

    def _route(self, msg: Message) -> None:
        update = self.presence.route(msg)
        if update is not None:
            for user_id in update.offline:
                if self.intake.went_offline(user_id, utcnow()):
                    self._dirty = True
            if update.synced:
                self._in_sync()
            return
        ref = parse_topic(msg.topic)
        if ref is None:
            return
        if ref.kind == "receipts":
            if self.intake.receipt(ref.user_id, msg.payload, utcnow()):
                self._dirty = True
        elif ref.kind == "analysis":
            self.intake.event(ref.user_id, ref.analysis_id or "", msg)

    def _in_sync(self) -> None:
        self.intake.in_sync(utcnow())
        self._synced_once = True
        self._dirty = True
        self.presence.ready.set()

    # --- settling -------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = utcnow()
        if (self._synced_once or time.monotonic() >= self._hold_until) and self._settle(now):
            self.senders.wake()  # new deliveries: do not wait for the next query
        nxt = self.store.next_due()
        if nxt is not None and nxt <= utcnow():
            self.senders.wake()  # new deliveries, or a retry that fell due
        wait = self.poll if nxt is None else (nxt - utcnow()).total_seconds()
        self._next_check = time.monotonic() + max(0.0, min(self.poll, wait))

    def _settle(self, now: datetime) -> bool:
        """Decide the due decisions; True when some of them created deliveries."""
        pushed = False
        for f in self.store.process_due(now, self.grace, self.presence.live):
            pushed = pushed or f.devices > 0
            metrics.DECISIONS.labels(str(f.state)).inc()
            metrics.DECISION_LATENCY.labels(str(f.state)).observe(
                max(0.0, (now - f.published_at).total_seconds())
            )
            if f.state is DecisionState.SUPPRESSED:
                metrics.SUPPRESSED_BY_RECEIPT.inc()
            log.info(
                "push decision: %s (%s)",
                f.state,
                f.reason,
                extra={"event_id": f.event_id, "user_id": f.user_id, "devices": f.devices},
            )
        return pushed
