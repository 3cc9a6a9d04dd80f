"""Live connections per user, cluster-wide, as presence tells them.

NATS has no per-user connection cap, so the callout counts: ``$SYS.ACCOUNT.APP.CONNECT`` /
``DISCONNECT`` events from every node, a CONNZ snapshot at start, and a periodic re-snapshot
(a SIGKILLed node sends no DISCONNECT for its clients). A connection is known by
``(server id, client id number)``, which is also how the callout request names it, so a grant
counts as *pending* until its CONNECT event arrives (or ``pending_seconds`` pass: the client
never finished connecting). Several callouts each keep their own ledger; two CONNECTs of one
user decided within the same few milliseconds by two callouts can both pass (so the
ledger alone is exact per callout only: the cluster-wide cap is the JetStream bucket of
:mod:`plantnotify.authcallout.capstore`, which asks :meth:`Ledger.known_gone` which of its
entries have ended).

Not thread-safe: the service uses it from its event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

ConnKey = tuple[str, int]  # (server id, client id number)


@dataclass
class Conn:
    user: str
    client_id: str
    since: float
    pending_until: float | None = None  # a grant whose CONNECT event has not arrived


class Ledger:
    def __init__(
        self,
        pending_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pending_seconds = pending_seconds
        self._clock = clock
        self._wall = wall
        self._resynced_wall = 0.0  # unix time the last applied snapshot was requested at
        self._conns: dict[ConnKey, Conn] = {}
        self._by_user: dict[str, set[ConnKey]] = {}
        self._gone: dict[ConnKey, float] = {}  # disconnects seen, for resync races

    # --- questions --------------------------------------------------------------------------

    def live(self, user: str) -> list[Conn]:
        now = self._clock()
        out = []
        for key in list(self._by_user.get(user, ())):
            conn = self._conns[key]
            if conn.pending_until is not None and conn.pending_until < now:
                self._drop(key)
                continue
            out.append(conn)
        return out

    def live_keys(self, user: str) -> list[tuple[ConnKey, Conn]]:
        """The live connections of ``user`` with their keys (to close them)."""
        self.live(user)  # drops expired grants
        return [(key, self._conns[key]) for key in self._by_user.get(user, ())]

    def __contains__(self, key: object) -> bool:
        return key in self._conns

    def count_other(self, user: str, client_id: str) -> int:
        """Live connections of ``user`` other than ``client_id`` (a take-over replaces it)."""
        return sum(1 for c in self.live(user) if c.client_id != client_id)

    def owner_of(self, client_id: str) -> str | None:
        """The user a live connection with this client id belongs to (overlapping ids)."""
        for conn in self._conns.values():
            if conn.client_id == client_id:
                return conn.user
        return None

    def __len__(self) -> int:
        return len(self._conns)

    def known_gone(self, key: ConnKey, granted_at: float, margin: float = 2.0) -> bool:
        """Whether a connection granted at ``granted_at`` (unix seconds; by any callout) has
        certainly ended: its DISCONNECT (or its node's SHUTDOWN) was seen, or a snapshot
        requested more than ``margin`` seconds (clock skew between callouts) after the grant did
        not list it. Unknown is not gone: a grant whose CONNECT event has not arrived yet still
        counts."""
        if key in self._gone:
            return True
        if key in self._conns:
            return False
        return granted_at + margin < self._resynced_wall

    def users(self) -> set[str]:
        """Users with at least one live connection (expired grants dropped)."""
        return {user for user in list(self._by_user) if self.live(user)}

    # --- what happens -----------------------------------------------------------------------

    def grant(self, key: ConnKey, user: str, client_id: str) -> None:
        now = self._clock()
        if key in self._conns:
            return
        self._add(key, Conn(user, client_id, now, pending_until=now + self.pending_seconds))

    def connected(self, key: ConnKey, user: str, client_id: str) -> None:
        self._gone.pop(key, None)
        conn = self._conns.get(key)
        if conn is not None:
            conn.pending_until = None
            return
        self._add(key, Conn(user, client_id, self._clock()))

    def disconnected(self, key: ConnKey) -> None:
        self._gone[key] = self._clock()
        self._drop(key)

    def server_gone(self, server_id: str) -> None:
        now = self._clock()
        for key in [k for k in self._conns if k[0] == server_id]:
            self._gone[key] = now
            self._drop(key)

    def resync(
        self,
        started: float,
        servers: Iterable[str],
        snapshot: Iterable[tuple[ConnKey, str, str]],
        *,
        started_wall: float | None = None,
    ) -> None:
        """Replace what a snapshot requested at ``started`` covers.

        ``servers``: the servers that answered; connections on any other server are dropped
        (a dead node). A connection seen by an event after ``started`` wins over the snapshot
        both ways (a newer CONNECT is kept, a newer DISCONNECT is not undone).
        ``started_wall``: ``started`` as unix time (for :meth:`known_gone`; default: now).
        """
        answered = set(servers)
        seen: set[ConnKey] = set()
        for key, user, client_id in snapshot:
            seen.add(key)
            gone_at = self._gone.get(key)
            if gone_at is not None and gone_at >= started:
                continue
            if key in self._conns:
                self._conns[key].pending_until = None
            else:
                self._add(key, Conn(user, client_id, started))
        for key, conn in list(self._conns.items()):
            if key in seen or conn.since >= started:
                continue
            if key[0] not in answered or conn.pending_until is None:
                self._drop(key)
        self._gone = {k: t for k, t in self._gone.items() if t >= started}
        self._resynced_wall = self._wall() if started_wall is None else started_wall

    # --- internals ---------------------------------------------------------------------------

    def _add(self, key: ConnKey, conn: Conn) -> None:
        self._conns[key] = conn
        self._by_user.setdefault(conn.user, set()).add(key)

    def _drop(self, key: ConnKey) -> None:
        conn = self._conns.pop(key, None)
        if conn is None:
            return
        keys = self._by_user.get(conn.user)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[conn.user]
