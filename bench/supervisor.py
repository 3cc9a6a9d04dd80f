"""The bench's processes die with the bench, however the bench dies.

A bench run starts a whole stack: brokers, ``plantnotify worker``, the N8N stand-in, agents, and
for the soak a PostgreSQL cluster and a RabbitMQ node of its own. The runner stops them when it
ends, but a runner that is SIGKILLed (a test's timeout, the OOM killer, ``kill -9``) stops
nothing, and several of them would not get a signal anyway: the broker and RabbitMQ run in
sessions of their own (so a terminal's Ctrl-C reaches only the runner, which stops them
cleanly), and PostgreSQL is left running by ``pg_ctl``, which exits after starting it.

So the runner (:func:`supervise`):

1. becomes a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): whatever one of its children
   leaves running (PostgreSQL's postmaster after ``pg_ctl`` exits) becomes its child instead of
   init's, so every process the bench started stays below it in the process tree;
2. starts this module as a watchdog in a session of its own, holding the read end of a pipe
   whose write end only the runner has. The watchdog notes the runner's descendants (pid and
   start time) every ``SCAN_SECONDS``. When the pipe reaches end of file (the runner exited,
   in whatever way), it sends SIGTERM to each of them still alive (and to their descendants),
   SIGKILL after ``GRACE_SECONDS``, and removes the directories the runner registered with
   :func:`remove_at_exit` (the private PostgreSQL and RabbitMQ data).

The runner also puts a mark of its own (``PLANTNOTIFY_BENCH_RUN``) in its environment before it
starts anything; every process it starts inherits it, and the watchdog's final stop also takes
every process of this user whose environment carries the mark. So a process started just before
the runner died (after the watchdog's last scan, and reparented away from the runner's tree when
the runner went) is stopped too. After a normal end the stack is already stopped and the
watchdog finds nothing to do. ``epmd`` (Erlang's name service, shared by every Erlang node of the
machine) is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
SCAN_SECONDS = 1.0
GRACE_SECONDS = 5.0
SPARED = frozenset({"epmd"})
MARK_VARIABLE = "PLANTNOTIFY_BENCH_RUN"

_pipe: int | None = None


def supervise() -> subprocess.Popen[bytes] | None:
    """Make this process's descendants die with it (once per process; None if unsupported)."""
    global _pipe
    if _pipe is not None or not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        return None
    mark = f"{os.getpid()}-{time.time_ns()}"
    os.environ[MARK_VARIABLE] = mark  # inherited by everything the runner starts from now on
    read_end, write_end = os.pipe()  # neither is inherited by children started later
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.supervisor", str(os.getpid()), mark],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or a kill of the runner's group spares it
        )
    finally:
        os.close(read_end)
    _pipe = write_end
    return proc


def remove_at_exit(path: Path) -> None:
    """Have the watchdog remove ``path`` if the runner dies without doing it."""
    if _pipe is not None:
        with contextlib.suppress(OSError):
            os.write(_pipe, f"{path}\n".encode())


# --- the watchdog -------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, str, str] | None:
    """(parent pid, start time, state, command name) of ``pid``; None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is the state, [1] the parent pid, [19] the start time (fields 3, 4, 22)
    return int(fields[1]), int(fields[19]), fields[0], name


def _table() -> dict[int, tuple[int, int, str, str]]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                table[int(entry)] = info
    return table


class _Scanner:
    """The process table, reading only processes not seen before: reading all of them (200+
    on a busy machine) every second cost the watchdog ~2 % of a core. A cached parent may be
    stale after a reparenting; the walk starts from every known process too, and the final
    stop reads everything afresh."""

    def __init__(self) -> None:
        self.cache: dict[int, tuple[int, int, str, str]] = {}

    def table(self) -> dict[int, tuple[int, int, str, str]]:
        pids = {int(e) for e in os.listdir("/proc") if e.isdigit()}
        for gone in self.cache.keys() - pids:
            del self.cache[gone]
        for pid in pids - self.cache.keys():
            info = _stat(pid)
            if info is not None:
                self.cache[pid] = info
        return self.cache


def _descendants(roots: set[int], table: dict[int, tuple[int, int, str, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(known: dict[int, int], table: dict[int, tuple[int, int, str, str]]) -> set[int]:
    """Those of ``known`` (pid -> start time) that still run (not a zombie, not a new process
    that got a recycled pid)."""
    return {
        pid
        for pid, started in known.items()
        if pid in table and table[pid][1] == started and table[pid][2] != "Z"
    }


def _marked(mark: str, pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` that belong to this user and whose environment carries ``mark``."""
    needle = f"\0{MARK_VARIABLE}={mark}\0".encode()
    uid = os.getuid()
    found = set()
    for pid in pids:
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in b"\0" + environ:
            found.add(pid)
    return found


def watch(runner: int, mark: str) -> None:
    me = os.getpid()
    known: dict[int, int] = {}
    scanner = _Scanner()
    paths: list[str] = []
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], SCAN_SECONDS)
        if ready:
            data = os.read(0, 65536)
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            paths.extend(line.decode() for line in lines if line)
        table = scanner.table()
        for pid in _descendants({runner, *known}, table) - {me}:
            if pid not in known and table[pid][3] not in SPARED:
                known[pid] = table[pid][1]
        known = {pid: started for pid, started in known.items() if pid in table}
    _stop_all(known, me, mark)
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _stop_all(known: dict[int, int], me: int, mark: str) -> None:
    """SIGTERM to each once, SIGKILL to what is left after ``GRACE_SECONDS``."""
    started = time.monotonic()
    termed: set[int] = set()
    while time.monotonic() < started + 2 * GRACE_SECONDS:
        table = _table()
        # the runner's own, however late they started
        for pid in _marked(mark, table.keys() - known.keys() - {me}):
            if table[pid][3] not in SPARED:
                known[pid] = table[pid][1]
        # their children too: one started after the last scan, or left by a killed parent
        for pid in _descendants(_alive(known, table), table) - {me}:
            if pid not in known and table[pid][3] not in SPARED:
                known[pid] = table[pid][1]
        alive = _alive(known, table)
        if not alive:
            return
        late = time.monotonic() > started + GRACE_SECONDS
        for pid in alive if late else alive - termed:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
            termed.add(pid)
        time.sleep(0.2)


def main() -> None:
    # A terminal's Ctrl-C or hang-up is for the runner, which then stops everything itself.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    watch(int(sys.argv[1]), sys.argv[2])


if __name__ == "__main__":
    main()
