"""The push decision as a table: every rule of contract §6, and the order they apply in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.decision import Action, DecisionInput, Reason, decide
from plantnotify.contracts.events import EventType

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
GRACE = timedelta(seconds=10)
DONE = EventType.COMPLETED
FAILED = EventType.FAILED
PROGRESS = EventType.PROGRESS
DEVS = ("tok-a", "tok-b")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# (id, event, now, live at publish, live now, receipt, already pushed, action, reason, until)
TABLE = [
    ("progress-offline", PROGRESS, 0, 0, 0, False, (), Action.IGNORE, Reason.NOT_PUSHABLE, None),
    ("progress-live-late", PROGRESS, 99, 2, 2, False, (), Action.IGNORE, Reason.NOT_PUSHABLE, None),
    ("unknown-type", "Bogus", 0, 0, 0, False, (), Action.IGNORE, Reason.NOT_PUSHABLE, None),
    ("offline", DONE, 0, 0, None, False, (), Action.PUSH, Reason.OFFLINE_AT_PUBLISH, None),
    ("offline-failed", FAILED, 0, 0, 0, False, (), Action.PUSH, Reason.OFFLINE_AT_PUBLISH, None),
    ("offline-receipt", DONE, 0, 0, 0, True, (), Action.SUPPRESS, Reason.RECEIPT, None),
    ("live-wait", DONE, 0, 1, 1, False, (), Action.WAIT, Reason.IN_GRACE, 10),
    ("live-wait-mid", DONE, 9.9, 3, 3, False, (), Action.WAIT, Reason.IN_GRACE, 10),
    ("live-receipt", DONE, 2, 1, 1, True, (), Action.SUPPRESS, Reason.RECEIPT, None),
    ("live-receipt-late", DONE, 30, 1, 1, True, (), Action.SUPPRESS, Reason.RECEIPT, None),
    ("live-grace-over", DONE, 10, 1, 1, False, (), Action.PUSH, Reason.GRACE_EXPIRED, None),
    ("live-went-offline", DONE, 3, 1, 0, False, (), Action.PUSH, Reason.WENT_OFFLINE, None),
    ("live-now-unknown", DONE, 3, 1, None, False, (), Action.WAIT, Reason.IN_GRACE, 10),
    ("unknown-wait", DONE, 0, None, None, False, (), Action.WAIT, Reason.IN_GRACE, 10),
    ("unknown-then-off", DONE, 1, None, 0, False, (), Action.PUSH, Reason.WENT_OFFLINE, None),
    ("unknown-over", DONE, 11, None, None, False, (), Action.PUSH, Reason.GRACE_EXPIRED, None),
    ("half-open", DONE, 12, 1, 1, False, (), Action.PUSH, Reason.GRACE_EXPIRED, None),
    ("one-pushed", DONE, 0, 0, 0, False, ("tok-a",), Action.PUSH, Reason.OFFLINE_AT_PUBLISH, None),
]


@pytest.mark.parametrize(
    ("event", "now", "live_pub", "live_now", "receipt", "pushed", "action", "reason", "until"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_decision_table(
    event: str,
    now: float,
    live_pub: int | None,
    live_now: int | None,
    receipt: bool,
    pushed: tuple[str, ...],
    action: Action,
    reason: Reason,
    until: float | None,
) -> None:
    d = decide(
        DecisionInput(
            event_type=event,
            published_at=T0,
            now=at(now),
            grace=GRACE,
            live_at_publish=live_pub,
            live_now=live_now,
            receipt_seen=receipt,
            devices=DEVS,
            already_pushed=frozenset(pushed),
        )
    )
    assert (d.action, d.reason) == (action, reason)
    assert d.until == (at(until) if until is not None else None)
    assert d.final is (action is not Action.WAIT)
    if action is Action.PUSH:
        assert d.devices == tuple(t for t in DEVS if t not in pushed)
    else:
        assert d.devices == ()


def test_push_with_no_devices_left_is_an_empty_push() -> None:
    d = decide(
        DecisionInput(DONE, T0, T0, GRACE, 0, devices=("x", "x"), already_pushed=frozenset({"x"}))
    )
    assert d.action is Action.PUSH and d.devices == ()


def test_duplicate_devices_are_pushed_once() -> None:
    d = decide(DecisionInput(DONE, T0, T0, GRACE, 0, devices=("x", "y", "x")))
    assert d.devices == ("x", "y")


def test_zero_grace_pushes_a_live_user_at_once() -> None:
    d = decide(DecisionInput(DONE, T0, T0, timedelta(0), 2, live_now=2, devices=DEVS))
    assert d.action is Action.PUSH and d.reason is Reason.GRACE_EXPIRED
