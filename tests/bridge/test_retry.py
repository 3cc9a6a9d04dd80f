"""The retry policy after a failed push attempt: bounded, jittered, honouring Retry-After."""

from __future__ import annotations

import random
import time
from email.utils import formatdate

import pytest

from bridge.retry import NextStep, Outcome, RetryPolicy, next_step, parse_retry_after

POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0, config_delay=30.0)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome.SENT, "sent"),
        (Outcome.DEVICE_GONE, "device_removed"),
        (Outcome.FAILED, "failed"),
    ],
)
def test_terminal_outcomes_stop(outcome: Outcome, status: str) -> None:
    assert next_step(POLICY, outcome, attempts=1, age=0) == NextStep(None, status)


@pytest.mark.parametrize(("attempts", "low", "high"), [(1, 0.5, 1), (2, 1, 2), (3, 2, 4)])
def test_transient_backoff_doubles_with_jitter(attempts: int, low: float, high: float) -> None:
    rng = random.Random(7)
    delays = {
        next_step(POLICY, Outcome.RETRY, attempts=attempts, age=0, rng=rng).retry_in
        for _ in range(50)
    }
    assert all(d is not None and low <= d <= high for d in delays)
    assert len(delays) > 10  # jittered, not a fixed schedule


def test_transient_is_bounded() -> None:
    assert next_step(POLICY, Outcome.RETRY, attempts=4, age=5) == NextStep(None, "exhausted")


def test_retry_after_is_honoured_even_when_longer_than_backoff() -> None:
    step = next_step(POLICY, Outcome.RETRY, attempts=1, age=0, retry_after=5)
    assert step.status == "pending" and step.retry_in is not None and 5 <= step.retry_in <= 5.5
    capped = next_step(
        RetryPolicy(max_retry_after=10), Outcome.RETRY, attempts=1, age=0, retry_after=10_000
    )
    assert capped.retry_in is not None and capped.retry_in <= 11


def test_configuration_errors_wait_longer_and_give_up_by_age() -> None:
    for attempts in (1, 2, 9):
        step = next_step(POLICY, Outcome.CONFIG, attempts=attempts, age=60)
        assert step.status == "pending" and step.retry_in is not None
        assert 30 * 0.8 <= step.retry_in <= 30
    assert next_step(POLICY, Outcome.CONFIG, attempts=1, age=1800) == NextStep(None, "exhausted")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("3", 3.0), (" 1.5 ", 1.5), ("-1", None), ("soon", None)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    got = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert got is not None and 25 <= got <= 31
