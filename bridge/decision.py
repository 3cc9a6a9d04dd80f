"""The push decision (contract §6) as a pure function: no clock, no database, no broker.

An event taken in is stored as a pending decision, due at :func:`first_due`; the bridge calls
:func:`decide` once, when it falls due (earlier when a receipt arrives or the user goes offline),
with the receipts, devices and sessions of that moment, and stores :attr:`Decision.state`. The
same inputs always give the same outcome, which is what makes the rules testable as a table
(tests/bridge/test_decision.py) and a restart harmless: the inputs live in PostgreSQL.

Rules, in order:
1. Only ``AnalysisCompleted`` / ``AnalysisFailed`` can push; anything else is ignored.
2. A receipt for the event (from any device of the user) suppresses the push. Receipts are per
   event, not per device: "a receipt in time → no push" (contract §6), so one device showing
   the result is enough for all of them.
3. No live connection when the event was published → push now.
4. Live then, but the user has since gone offline without a receipt → push now (waiting
   longer cannot bring a receipt from a device that is gone).
5. Grace period over without a receipt → push (this covers half-open TCP connections that the
   broker still counts as live until keepalive expiry).
6. Otherwise wait until the grace period ends.
``None`` for a connection count means *unknown* (the bridge is not in sync with the broker);
unknown is never treated as offline at publish time, so it costs at most the grace period.
A push goes to the user's registered devices that have not been pushed for this event yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from plantnotify.contracts.events import PUSHABLE_EVENTS


class Action(StrEnum):
    PUSH = "push"
    WAIT = "wait"
    SUPPRESS = "suppress"
    IGNORE = "ignore"


class DecisionState(StrEnum):
    """``push_decisions.state``: ``pending`` until decided, then exactly one of the others."""

    PENDING = "pending"
    PUSHED = "pushed"
    SUPPRESSED = "suppressed"
    NO_DEVICES = "no_devices"  # a push, but every device was pushed already or none is left
    IGNORED = "ignored"


class Reason(StrEnum):
    NOT_PUSHABLE = "not a Completed/Failed event"
    RECEIPT = "a device confirmed the event"
    OFFLINE_AT_PUBLISH = "no live session when published"
    WENT_OFFLINE = "user went offline without confirming"
    GRACE_EXPIRED = "no receipt within the grace period"
    IN_GRACE = "live session; waiting for a receipt"
    NO_DEVICES = "no registered device left to push"


@dataclass(frozen=True, slots=True)
class DecisionInput:
    event_type: str
    published_at: datetime  # when the event was published (the grace period starts here)
    now: datetime
    grace: timedelta
    live_at_publish: int | None  # live MQTT connections of the user at publish time
    live_now: int | None = None  # live connections now
    receipt_seen: bool = False
    devices: tuple[str, ...] = ()
    already_pushed: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: Reason
    until: datetime | None = None  # WAIT: look again at this time
    devices: tuple[str, ...] = ()  # PUSH: these devices

    @property
    def final(self) -> bool:
        return self.action is not Action.WAIT

    @property
    def state(self) -> DecisionState:
        """What this decision is stored as."""
        if self.action is Action.PUSH:
            return DecisionState.PUSHED if self.devices else DecisionState.NO_DEVICES
        if self.action is Action.SUPPRESS:
            return DecisionState.SUPPRESSED
        if self.action is Action.IGNORE:
            return DecisionState.IGNORED
        return DecisionState.PENDING


def _push(reason: Reason, devices: Iterable[str], already: frozenset[str]) -> Decision:
    remaining = tuple(dict.fromkeys(d for d in devices if d not in already))
    return Decision(Action.PUSH, reason, devices=remaining)


def decide(inp: DecisionInput) -> Decision:
    if inp.event_type not in PUSHABLE_EVENTS:
        return Decision(Action.IGNORE, Reason.NOT_PUSHABLE)
    if inp.receipt_seen:
        return Decision(Action.SUPPRESS, Reason.RECEIPT)
    if inp.live_at_publish == 0:
        return _push(Reason.OFFLINE_AT_PUBLISH, inp.devices, inp.already_pushed)
    if inp.live_now == 0:
        return _push(Reason.WENT_OFFLINE, inp.devices, inp.already_pushed)
    due = inp.published_at + inp.grace
    if inp.now >= due:
        return _push(Reason.GRACE_EXPIRED, inp.devices, inp.already_pushed)
    return Decision(Action.WAIT, Reason.IN_GRACE, until=due)


def first_due(
    published_at: datetime, now: datetime, grace: timedelta, live_at_publish: int | None
) -> datetime:
    """When an event just taken in is first worth deciding: now for a user with no live session
    (rule 3), else when its grace period ends (rules 5 and 6). A receipt or the user going
    offline makes it due sooner (the store and the loop see to that); :func:`decide` then runs
    once, with everything known at that moment."""
    if live_at_publish == 0:
        return now
    return max(now, published_at + grace)
