"""The session picture: unknown until in sync, stale boots are offline, forgotten on loss."""

from __future__ import annotations

from bridge.sessions import SessionPicture
from plantnotify.contracts.events import BrokerBoot, SessionEntry, SessionSnapshot


def snap(user: str, boot: str, n: int, seq: int) -> SessionSnapshot:
    return SessionSnapshot(user_id=user, boot_id=boot, connections=n, seq=seq)


def synced(boot: str = "b1") -> SessionPicture:
    p = SessionPicture()
    p.on_boot(BrokerBoot(boot_id=boot, started_at=0))
    p.mark_synced()
    return p


def test_unknown_until_in_sync_and_boot_known() -> None:
    p = SessionPicture()
    p.on_snapshot(snap("u", "b1", 1, 1))
    assert p.live("u") is None and not p.known
    p.mark_synced()
    assert p.live("u") is None  # no boot yet
    p.on_boot(BrokerBoot(boot_id="b1", started_at=0))
    assert p.live("u") == 1 and p.live("nobody") == 0


def test_snapshot_of_an_older_boot_is_offline() -> None:
    p = synced("b2")
    p.on_snapshot(snap("u", "b1", 3, 9))
    assert p.live("u") == 0
    assert p.totals().connections == 0


def test_duplicates_and_reordered_snapshots_are_ignored() -> None:
    p = synced()
    assert p.on_snapshot(snap("u", "b1", 2, 5)) is False
    assert p.on_snapshot(snap("u", "b1", 0, 4)) is False  # older seq
    assert p.live("u") == 2
    assert p.on_snapshot(snap("u", "b1", 0, 6)) is True  # went offline
    assert p.on_snapshot(snap("u", "b1", 0, 6)) is False  # QoS 1 duplicate


def test_a_stale_boot_never_replaces_the_current_one() -> None:
    p = synced("b2")
    p.on_snapshot(snap("u", "b2", 1, 1))
    p.on_snapshot(snap("u", "b1", 0, 50))
    assert p.live("u") == 1


def test_new_boot_makes_everyone_offline_until_new_snapshots() -> None:
    p = synced("b1")
    p.on_snapshot(snap("u", "b1", 1, 1))
    assert p.on_boot(BrokerBoot(boot_id="b2", started_at=1)) is True
    assert p.live("u") == 0
    p.on_snapshot(snap("u", "b2", 1, 1))
    assert p.live("u") == 1
    assert p.totals().connections == 1 and p.totals().users == 1


def test_reset_forgets_everything() -> None:
    p = synced()
    p.on_snapshot(snap("u", "b1", 1, 1))
    p.reset()
    assert p.live("u") is None and p.boot_id is None and p.totals().users == 0


def test_a_deleted_snapshot_is_offline_and_older_ones_stay_refused() -> None:
    p = synced()
    assert p.on_deleted("nobody") is False
    p.on_snapshot(snap("u", "b1", 2, 5))
    assert p.on_deleted("u") is True  # joined between the offline snapshot and its deletion
    assert p.live("u") == 0
    assert p.on_snapshot(snap("u", "b1", 2, 5)) is False  # a QoS 1 duplicate of the old one
    assert p.live("u") == 0
    p.on_snapshot(snap("u", "b1", 0, 6))  # the usual order: offline snapshot, then deletion
    assert p.on_deleted("u") is False and p.live("u") == 0
    p.on_snapshot(snap("u", "b1", 1, 7))
    assert p.live("u") == 1 and p.totals().users == 1


def entry(user: str, n: int) -> SessionEntry:
    return SessionEntry(user_id=user, connections=n, client_ids=[f"{user}-{i}" for i in range(n)])


def test_the_whole_picture_names_the_online_and_sets_the_boot() -> None:
    p = SessionPicture()
    # snapshots that came on the subscription before the picture: one older, one newer
    p.on_snapshot(snap("old", "b1", 1, 3))  # left before the picture (seq 5): not in it
    p.on_snapshot(snap("new", "b1", 1, 7))  # came after the picture was taken
    p.on_snapshot(snap("both", "b1", 2, 9))  # newer than the picture's entry
    gone = p.on_picture("b1", 5, 100, [entry("a", 1), entry("b", 2), entry("both", 1)])
    assert gone == ()  # not known before: nothing "went offline"
    p.mark_synced()
    assert p.boot_id == "b1"
    assert (p.live("a"), p.live("b"), p.live("both")) == (1, 2, 2)
    assert p.live("old") == 0 and p.live("new") == 1 and p.live("nobody") == 0
    assert p.totals().users == 4
    # snapshots older than (or as old as) the picture do not undo it
    p.on_snapshot(snap("a", "b1", 0, 5))
    assert p.live("a") == 1
    assert p.on_snapshot(snap("a", "b1", 0, 10)) is True and p.live("a") == 0


def test_a_picture_of_a_new_boot_makes_the_old_one_stale() -> None:
    p = synced("b1")
    p.on_snapshot(snap("u", "b1", 1, 1))
    gone = p.on_picture("b2", 1, 0, [entry("v", 1)])
    assert gone == ("u",)
    assert p.boot_id == "b2" and p.live("u") == 0 and p.live("v") == 1
    p.on_snapshot(snap("u", "b1", 1, 2))  # a late snapshot of the old boot changes nothing
    assert p.live("u") == 0
