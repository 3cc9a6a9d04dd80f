"""The scheduling loop: the one thread that owns the session picture and does all deciding.

Events (thousands a second, most of them online users') do not go through the inbox: the MQTT
thread reads the few fields it needs and queues them in the intake (:meth:`Loop.message`),
waking the loop once per batch, not once per event. Each wake-up takes a batch of other
messages and connection changes from the inbox and routes them (presence, receipts), then takes
in the queued events in one query and one insert, sweeps the ``events`` table now and then, and
settles the decisions that fell due: :func:`bridge.decision.decide` runs there, once per
decision, when it is due (an online user's event is not looked at again before its grace period
ends, a receipt arrives or the user goes offline). Deliveries it creates wake the senders.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.exc import DBAPIError

from bridge import metrics
from bridge.decision import DecisionState
from bridge.intake import Intake
from bridge.presence import PresenceSource
from bridge.store import Store
from plantnotify.contracts.topics import parse_topic
from plantnotify.mqtt import ConnectionState, Message

log = logging.getLogger("plantnotify.bridge")

# After a start, no decision is settled until the bridge has been in sync once (bounded): the
# receipts the broker kept in our persistent session while we were away are read first.
STARTUP_HOLD_SECONDS = 10.0
MAX_BATCH = 500
# Online users' events taken in per pass of the loop (one query and one insert).
ONLINE_BATCH = 1000


class Wakeable(Protocol):
    """The senders (threads or processes): told when deliveries were created or fell due."""

    def wake(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Item:
    kind: str  # "msg" | "state" | "wake"
    message: Message | None = None
    state: ConnectionState | None = None


WAKE = Item("wake")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Loop:
    def __init__(
        self,
        *,
        store: Store,
        presence: PresenceSource,
        intake: Intake,
        senders: Wakeable,
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
        self._next_due_query = 0.0
        self._synced_once = False
        self._hold_until = 0.0
        # Set by the MQTT thread when it woke the loop for queued events; cleared by the loop
        # before it takes them, so an event queued after that always wakes it again.
        self._events_woken = False
        # Users whose last connection went in this batch (a mass disconnect is one statement).
        self._gone: list[str] = []

    def put(self, item: Item) -> None:
        """Any thread: hand a message, a connection change or a wake-up to the loop."""
        self.inbox.put(item)

    def message(self, msg: Message) -> None:
        """The MQTT thread: an event is queued in the intake right here (the loop is woken only
        if it may be asleep); anything else goes to the inbox."""
        ref = parse_topic(msg.topic)
        if ref is None or ref.kind != "analysis":
            self.inbox.put(Item("msg", message=msg))
            return
        if self.intake.event(ref.user_id, ref.analysis_id or "", msg) and not self._events_woken:
            self._events_woken = True
            self.inbox.put(WAKE)

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
                if self._gone:
                    gone, self._gone = self._gone, []
                    if self.intake.went_offline(gone, utcnow()):
                        self._dirty = True
                self._events_woken = False
                # Offline users' events first, and settled at once: their push is due now.
                self._due(self.intake.take_in_urgent(utcnow()))
                if self.presence.sync_step():
                    self._in_sync()
                mono = time.monotonic()
                if self._dirty or mono >= self._next_check:
                    self._dirty = False
                    self._tick()
                # Then a bounded batch of online users' events (due when their grace period
                # ends): a pass stays short, so an offline user's event that arrives meanwhile
                # waits for one batch at most, not for the whole backlog.
                self._due(self.intake.take_in_online(utcnow(), ONLINE_BATCH))
                if self.intake.arrivals_waiting:
                    self.inbox.put(WAKE)  # more queued: go round again at once
                # After settling: a fresh offline user's event never waits behind a sweep.
                if mono >= self._next_sweep:
                    self._next_sweep = mono + self.poll
                    due, backlog = self.intake.sweep(utcnow())
                    self._due(due)
                    if backlog:  # sweep again on the next pass, not after a poll
                        self._next_sweep = time.monotonic()
            except DBAPIError as exc:
                log.error("database error in the bridge loop; retrying in 1 s: %s", exc.orig)
                self.intake.forget_arrivals()
                self._next_check = time.monotonic() + 1.0
                self._stop.wait(1.0)

    def _due(self, due: datetime | None) -> None:
        """Decisions were taken in; the earliest falls due at ``due``: settle now if it is
        due, else make sure the loop looks again by then."""
        if due is None:
            return
        wait = (due - utcnow()).total_seconds()
        if wait <= 0:
            self._dirty = True
        else:
            self._next_check = min(self._next_check, time.monotonic() + wait)

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
            self._gone.extend(update.offline)  # expedited together, after the batch
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
            self.intake.event(ref.user_id, ref.analysis_id or "", msg)  # taken in this pass

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
        mono = time.monotonic()
        if mono < self._next_due_query:
            # Settled what was due; the earliest pending time was read less than a poll ago
            # (one query fewer on the path of every offline user's event).
            self._next_check = mono + self.poll
            return
        self._next_due_query = mono + self.poll
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
