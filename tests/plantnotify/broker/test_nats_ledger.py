"""The callout's connection ledger: grants, presence events, snapshots and their races."""

from __future__ import annotations

from plantnotify.broker.engines.nats.ledger import Ledger


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_grants_count_until_their_connect_event_or_time_out() -> None:
    clock = Clock()
    ledger = Ledger(pending_seconds=5, clock=clock)
    ledger.grant(("s1", 1), "42", "42-a")
    assert ledger.count_other("42", "42-b") == 1
    assert ledger.count_other("42", "42-a") == 0  # a take-over replaces it
    ledger.connected(("s1", 1), "42", "42-a")
    clock.now += 10
    assert ledger.count_other("42", "42-b") == 1  # confirmed: no time-out any more
    ledger.grant(("s1", 2), "42", "42-c")
    clock.now += 6
    assert ledger.count_other("42", "x") == 1  # the unconfirmed grant expired
    ledger.disconnected(("s1", 1))
    assert ledger.count_other("42", "x") == 0
    assert ledger.owner_of("42-a") is None


def test_resync_drops_dead_servers_and_keeps_newer_events() -> None:
    clock = Clock()
    ledger = Ledger(clock=clock)
    ledger.connected(("dead", 1), "42", "42-a")
    ledger.connected(("s1", 1), "42", "42-b")
    ledger.connected(("s1", 2), "42", "42-gone")  # closed before the snapshot, event lost
    started = clock.now = 200.0
    clock.now = 201.0
    ledger.connected(("s1", 3), "42", "42-new")  # after the request: not in the snapshot
    ledger.disconnected(("s1", 1))  # after the request: the snapshot still lists it
    ledger.resync(started, ["s1"], [(("s1", 1), "42", "42-b"), (("s1", 4), "43", "43-x")])
    assert sorted(c.client_id for c in ledger.live("42")) == ["42-new"]
    assert [c.client_id for c in ledger.live("43")] == ["43-x"]


def test_known_gone_needs_evidence_not_absence_alone() -> None:
    clock = Clock()
    wall = Clock()
    wall.now = 1_000.0
    ledger = Ledger(clock=clock, wall=wall)
    ledger.connected(("s1", 1), "42", "42-a")
    assert not ledger.known_gone(("s1", 1), 990.0)  # live
    ledger.disconnected(("s1", 1))
    assert ledger.known_gone(("s1", 1), 990.0)  # its DISCONNECT came
    # granted by another callout, its CONNECT not seen yet: not gone
    assert not ledger.known_gone(("s2", 7), 995.0)
    # a snapshot requested well after the grant did not list it: gone (a killed node, a lost
    # DISCONNECT); one requested about when it was granted proves nothing (clock skew)
    ledger.resync(clock.now, ["s1", "s2"], [], started_wall=996.0)
    assert not ledger.known_gone(("s2", 7), 995.0)
    ledger.resync(clock.now, ["s1", "s2"], [], started_wall=1_000.0)
    assert ledger.known_gone(("s2", 7), 995.0)
    # a node that shut down: its connections are gone
    ledger.connected(("s3", 1), "42", "42-b")
    ledger.server_gone("s3")
    assert ledger.known_gone(("s3", 1), 1_001.0)
