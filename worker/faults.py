"""Fault-injection hooks for the crash-safety tests. Inert unless their variable is set.

``PLANTNOTIFY_TEST_CRASH_AFTER_COMMIT=1``: the worker process dies (``os._exit``, no clean-up,
like SIGKILL) right after it committed an analysis result and its event row, before the
RabbitMQ ack and before the outbox publish. So that the window is hit every time (and not lost
to a race with its own publisher thread, woken by the same commit), the armed process never
takes the outbox leadership: the committed event can only go out through the next worker.
Never set it outside tests.
"""

from __future__ import annotations

import logging
import os
import sys

CRASH_AFTER_COMMIT = "PLANTNOTIFY_TEST_CRASH_AFTER_COMMIT"
CRASH_EXIT_CODE = 137

log = logging.getLogger("plantnotify.worker.faults")


def crash_after_commit_armed() -> bool:
    return os.environ.get(CRASH_AFTER_COMMIT) == "1"


def after_result_commit() -> None:
    if crash_after_commit_armed():
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(CRASH_EXIT_CODE)


def announce() -> None:
    if crash_after_commit_armed():
        log.critical(
            "fault injection armed (%s): this worker dies after its first result commit "
            "and never publishes",
            CRASH_AFTER_COMMIT,
        )
