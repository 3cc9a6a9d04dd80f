"""Revoked tokens, as the auth callout keeps them (the same lines and rules as the plugin's
``mosquitto/plugin/revocations.c``).

The API's revocation feed (``api/revocation_feed.py``) publishes lines on
``$CONTROL/plantnotify/revocations`` from a service connection; on NATS that is the subject
``$CONTROL.plantnotify.revocations`` of the APP account, which only services may publish on
(devices may publish on their receipts topic only). The database is the source of truth:
a callout that starts asks the feed for everything in force (see :mod:`.service`), which the
feed sends followed by ``SYNC <bootId>``::

    S <userId> <sessionId> <until>   tokens carrying this sid (a login session) are refused
    U <userId> <notBefore> <until>   tokens of this user with iat < notBefore are refused
    SYNC <bootId>                    everything in force has been sent for this boot id

Times are unix seconds; an entry is forgotten once now >= until. A malformed line is skipped
(and counted), the others apply. A line that adds or tightens a revocation names its user in
``Applied.kick``: their live connections are closed (those whose token is not revoked
reconnect), as the plugin does.

Pure and not thread-safe: the service uses it from its event loop only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
TIME = re.compile(r"[0-9]{1,12}")
DEFAULT_MAX_ENTRIES = 1_000_000


@dataclass
class Applied:
    """What one payload did."""

    applied: int = 0
    malformed: int = 0
    expired: int = 0
    full: int = 0
    kick: list[str] = field(default_factory=list)  # users whose connections must close
    synced_boots: list[str] = field(default_factory=list)  # SYNC <bootId> lines seen


@dataclass
class _Entry:
    not_before: int
    until: int


class Revocations:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._sessions: dict[tuple[str, str], _Entry] = {}
        self._users: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._sessions) + len(self._users)

    def is_revoked(self, user: str, sid: str | None, iat: int | None, now: int) -> bool:
        """A token of ``user`` with session ``sid`` issued at ``iat`` (None: unknown, which a
        user revocation refuses) is revoked at ``now``."""
        if sid:
            entry = self._sessions.get((user, sid))
            if entry is not None and now < entry.until:
                return True
        entry = self._users.get(user)
        return entry is not None and now < entry.until and (iat is None or iat < entry.not_before)

    def apply(self, payload: bytes, now: int) -> Applied:
        out = Applied()
        try:
            text = payload.decode("ascii")
        except UnicodeDecodeError:
            out.malformed += 1
            return out
        for raw in text.split("\n"):
            line = raw[:-1] if raw.endswith("\r") else raw
            if line:
                self._apply_line(line, now, out)
        return out

    def prune(self, now: int) -> None:
        self._sessions = {k: e for k, e in self._sessions.items() if now < e.until}
        self._users = {k: e for k, e in self._users.items() if now < e.until}

    # --- internals ---------------------------------------------------------------------------

    def _apply_line(self, line: str, now: int, out: Applied) -> None:
        fields = line.split(" ")
        if len(fields) == 2 and fields[0] == "SYNC":
            if ID.fullmatch(fields[1]):
                out.synced_boots.append(fields[1])
            else:
                out.malformed += 1
            return
        if (
            len(fields) != 4
            or fields[0] not in ("S", "U")
            or not ID.fullmatch(fields[1])
            or not TIME.fullmatch(fields[3])
        ):
            out.malformed += 1
            return
        kind, user, third, until = fields[0], fields[1], fields[2], int(fields[3])
        if kind == "S" and not ID.fullmatch(third):
            out.malformed += 1
            return
        if kind == "U" and not TIME.fullmatch(third):
            out.malformed += 1
            return
        if now >= until:
            out.expired += 1
            return
        not_before = int(third) if kind == "U" else 0
        entry = self._users.get(user) if kind == "U" else self._sessions.get((user, third))
        if entry is not None:
            tightened = not_before > entry.not_before
            entry.not_before = max(entry.not_before, not_before)
            entry.until = max(entry.until, until)
            out.applied += 1
            if tightened:
                self._kick(out, user)
            return
        if len(self) >= self.max_entries:
            self.prune(now)
            if len(self) >= self.max_entries:
                out.full += 1
                self._kick(out, user)  # cannot remember it, but can still end the sessions
                return
        if kind == "U":
            self._users[user] = _Entry(not_before, until)
        else:
            self._sessions[(user, third)] = _Entry(0, until)
        out.applied += 1
        self._kick(out, user)

    @staticmethod
    def _kick(out: Applied, user: str) -> None:
        if user not in out.kick:
            out.kick.append(user)
