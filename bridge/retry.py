"""What to do after a push attempt failed: a pure function of the failure and the history.

The firebase-admin SDK's own urllib3 retries are switched off for FCM sends (see
:mod:`bridge.fcm_endpoint`), so this is the only retry layer: every attempt goes through the
database (recorded, visible to operators, survives restarts) and the two layers never multiply.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum


class Outcome(StrEnum):
    """The result of one send attempt, as recorded in ``push_attempts.outcome``."""

    SENT = "sent"  # FCM accepted it (HTTP 200)
    RETRY = "retry"  # quota, 5xx, time-out, network: try again later
    DEVICE_GONE = "device_gone"  # UNREGISTERED / invalid registration token: drop the device
    CONFIG = "config"  # our credentials/project are wrong: not the device's fault
    FAILED = "failed"  # a permanent error for this message (e.g. payload rejected)


class DeliveryStatus(StrEnum):
    """``push_deliveries.status``: pending and sending are open, the others final."""

    PENDING = "pending"  # due at next_attempt_at
    SENDING = "sending"  # leased by a bridge until next_attempt_at
    SENT = "sent"
    DEVICE_REMOVED = "device_removed"
    FAILED = "failed"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5  # transient failures: attempts in total, then "exhausted"
    base_delay: float = 1.0  # first back-off, doubling
    max_delay: float = 300.0
    config_delay: float = 30.0  # configuration errors: at least this long between attempts
    config_give_up_after: float = 1800.0  # ... and not beyond this age of the delivery
    max_retry_after: float = 3600.0  # cap on a server's Retry-After


@dataclass(frozen=True, slots=True)
class NextStep:
    retry_in: float | None  # seconds until the next attempt; None: stop (terminal)
    status: DeliveryStatus  # the delivery's new status


def next_step(
    policy: RetryPolicy,
    outcome: Outcome,
    *,
    attempts: int,
    age: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> NextStep:
    """``attempts`` counts the attempt just made; ``age`` is the delivery's age in seconds."""
    rand = rng or random
    if outcome is Outcome.SENT:
        return NextStep(None, DeliveryStatus.SENT)
    if outcome is Outcome.DEVICE_GONE:
        return NextStep(None, DeliveryStatus.DEVICE_REMOVED)
    if outcome is Outcome.FAILED:
        return NextStep(None, DeliveryStatus.FAILED)
    if outcome is Outcome.CONFIG:
        if age >= policy.config_give_up_after:
            return NextStep(None, DeliveryStatus.EXHAUSTED)
        cap = max(policy.max_delay, policy.config_delay)
        delay = min(cap, policy.config_delay * 2 ** max(0, attempts - 1))
        return NextStep(rand.uniform(delay * 0.8, delay), DeliveryStatus.PENDING)
    # transient
    if attempts >= policy.max_attempts:
        return NextStep(None, DeliveryStatus.EXHAUSTED)
    backoff = min(policy.max_delay, policy.base_delay * 2 ** max(0, attempts - 1))
    delay = rand.uniform(backoff / 2, backoff)  # "equal jitter": spread out, never instant
    if retry_after is not None:
        honoured = min(max(retry_after, 0.0), policy.max_retry_after)
        delay = max(delay, honoured + rand.uniform(0, max(0.05, honoured * 0.1)))
    return NextStep(delay, DeliveryStatus.PENDING)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); ``None`` when absent or
    unreadable (the back-off applies then)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return seconds if seconds >= 0 else None
