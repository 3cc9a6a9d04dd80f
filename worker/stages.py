"""Per-event stage timestamps for the bench's real-path scenario. Inert unless enabled.

``PLANTNOTIFY_BENCH_STAGES=<file>``: the worker appends one line per stage of every final
(Completed/Failed) event: ``<analysisId> <stage> <CLOCK_MONOTONIC ns>``, with the stages

- ``completed``: the moment the result's ``completedAt`` was taken (inside the transaction);
- ``committed``: the result transaction's COMMIT returned;
- ``read``: the outbox publisher fetched the row;
- ``written``: the PUBLISH was handed to the socket;
- ``puback``: the broker's PUBACK was read.

CLOCK_MONOTONIC is one clock for all processes on a machine, so the bench lines these up with
the device's arrival time. Lines are buffered and flushed every half second (and at exit); a
stage costs about a microsecond. Never set it in production: the file grows without bound.
"""

from __future__ import annotations

import atexit
import os
import threading
import time

VARIABLE = "PLANTNOTIFY_BENCH_STAGES"

_path = os.environ.get(VARIABLE)
_lock = threading.Lock()
_lines: list[str] = []
enabled = bool(_path)


def record(analysis_id: str, stage: str, ns: int | None = None) -> None:
    if not enabled:
        return
    line = f"{analysis_id} {stage} {ns if ns is not None else time.monotonic_ns()}\n"
    with _lock:
        _lines.append(line)


def flush() -> None:
    if not _path:
        return
    with _lock:
        lines = _lines[:]
        _lines.clear()
    if lines:
        with open(_path, "a") as f:
            f.writelines(lines)


def _flusher() -> None:
    while True:
        time.sleep(0.5)
        flush()


if enabled:
    atexit.register(flush)
    threading.Thread(target=_flusher, name="bench-stages", daemon=True).start()
