"""Who is online right now, as told by the broker itself (not by client wills).

The plugin publishes a ``SessionSnapshot`` on ``plantnotify/sessions/{userId}`` whenever a
user's live connections change (not retained), keeps a retained ``BrokerBoot`` on
``plantnotify/broker/boot``, and sends the whole picture (``SessionsPicture`` parts: every online
user, as of one ``seq``) to a service that asks for it. The bridge subscribes to the snapshots,
then asks for the picture: snapshots newer than the picture win, users in no part are offline.
That rebuilds the whole picture, after a restart of the bridge as after one of the broker:

* a snapshot from another boot than the current one is stale: that user is offline;
* until the bridge is *in sync* (connected, subscribed, and the whole picture read) every answer
  is "unknown" (``None``), never "offline" and never "online";
* losing the broker connection forgets everything: the bridge does not keep believing users
  are online on the strength of an old picture.

Half-open TCP connections still count as live until the broker's keepalive expiry; the grace
period of the push decision covers them. This object is confined to the bridge's loop thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantnotify.contracts.events import BrokerBoot, SessionEntry, SessionSnapshot


@dataclass(frozen=True, slots=True)
class Totals:
    connections: int
    users: int


class SessionPicture:
    def __init__(self) -> None:
        self._boot: str | None = None
        self._snapshots: dict[str, SessionSnapshot] = {}
        self._synced = False

    # --- what the bridge asks ---------------------------------------------------------------

    @property
    def known(self) -> bool:
        return self._synced and self._boot is not None

    @property
    def boot_id(self) -> str | None:
        return self._boot

    def live(self, user_id: str) -> int | None:
        """Live connections of ``user_id``; ``None`` while the picture is not known."""
        if not self.known:
            return None
        snap = self._snapshots.get(user_id)
        if snap is None or snap.boot_id != self._boot:
            return 0
        return snap.connections

    def totals(self) -> Totals:
        if not self.known:
            return Totals(0, 0)
        live = [
            s.connections
            for s in self._snapshots.values()
            if s.boot_id == self._boot and s.connections > 0
        ]
        return Totals(sum(live), len(live))

    # --- what the broker tells --------------------------------------------------------------

    def reset(self) -> None:
        """The connection to the broker is gone: nothing is known any more."""
        self._boot = None
        self._snapshots.clear()
        self._synced = False

    def mark_synced(self) -> None:
        self._synced = True

    def on_boot(self, boot: BrokerBoot) -> bool:
        """True when this is a new boot (every earlier snapshot just became stale)."""
        if boot.boot_id == self._boot:
            return False
        self._boot = boot.boot_id
        return True

    def on_deleted(self, user_id: str) -> bool:
        """The user's retained snapshot was deleted (earlier plugin versions did that when the
        last connection went, right after the offline snapshot): offline. True when it was live
        before. The last snapshot is kept as an offline one with its seq, so older duplicates
        stay refused."""
        old = self._snapshots.get(user_id)
        if old is None:
            return False
        before = self.live(user_id)
        self._snapshots[user_id] = old.model_copy(update={"connections": 0, "client_ids": []})
        return bool(before)

    def on_picture(
        self, boot_id: str, seq: int, at: int, sessions: list[SessionEntry]
    ) -> tuple[str, ...]:
        """The whole picture of boot ``boot_id`` as of ``seq`` (every part of it): the broker
        just said so, so that boot is the current one. Users in it are online unless a newer
        snapshot says otherwise; users in none of it are offline unless a newer snapshot says
        they came. Returns the users it shows going offline (live before, 0 now)."""
        was_live = [u for u in self._snapshots if self.live(u)]
        self.on_boot(BrokerBoot(boot_id=boot_id, started_at=0))
        named: set[str] = set()
        for entry in sessions:
            named.add(entry.user_id)
            self.on_snapshot(
                SessionSnapshot(
                    user_id=entry.user_id,
                    boot_id=boot_id,
                    connections=entry.connections,
                    client_ids=entry.client_ids,
                    seq=seq,
                    at=at,
                )
            )
        for user_id, old in list(self._snapshots.items()):
            if user_id in named or old.connections == 0:
                continue
            if old.boot_id == boot_id and old.seq > seq:
                continue  # came after the picture was taken
            self._snapshots[user_id] = old.model_copy(
                update={"boot_id": boot_id, "connections": 0, "client_ids": [], "seq": seq}
            )
        return tuple(u for u in was_live if not self.live(u))

    def on_snapshot(self, snap: SessionSnapshot) -> bool:
        """Apply a snapshot; True when it shows the user going offline (live before, 0 now)."""
        old = self._snapshots.get(snap.user_id)
        if old is not None and old.boot_id == snap.boot_id and snap.seq <= old.seq:
            return False  # a duplicate (QoS 1) or an older state
        if old is not None and old.boot_id == self._boot and snap.boot_id != self._boot:
            return False  # a stale boot's snapshot must not replace the current one
        before = self.live(snap.user_id)
        self._snapshots[snap.user_id] = snap
        after = self.live(snap.user_id)
        return bool(before) and after == 0
