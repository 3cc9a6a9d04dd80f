"""Pushes sent from sender processes (``FCM_SENDER_PROCESSES``): still once per (event, device)
with two bridges of two sender processes each, and their metrics served by the bridge."""

from __future__ import annotations

from bridge import metrics
from bridge.sender_process import SenderProcesses
from devtools.fcm_emulator import FcmEmulator
from tests.bridge.conftest import BridgeFactory, World, new_user
from tests.support.net import wait_for


def _sent() -> float:
    return metrics.PUSHES.labels("sent")._value.get()


def test_sender_processes_push_each_event_and_device_once(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator
) -> None:
    before = _sent()
    a = make_bridge(instance="procs-a", fcm_sender_processes=2, fallback_grace_seconds=60)
    make_bridge(instance="procs-b", fcm_sender_processes=2, fallback_grace_seconds=60)
    assert isinstance(a.senders, SenderProcesses)
    users = [new_user() for _ in range(4)]
    tokens = {u: [world.add_device(u), world.add_device(u, platform="ios")] for u in users}
    events = [world.emit(u) for u in users for _ in range(3)]

    for e in events:
        for row in world.finished(e.event_id, 2, timeout=30).values():
            assert row.status == "sent" and row.attempts == 1
            assert len(world.attempts(row.id)) == 1
    for u in users:
        for t in tokens[u]:
            got = sorted(m["message"]["data"]["eventId"] for m in fcm_emulator.deliveries(t))
            assert got == sorted(e.event_id for e in events if e.user_id == u)
    # relayed from the sender processes to the bridges' process
    wait_for(lambda: _sent() - before >= 2 * len(events), timeout=5, what="relayed metrics")
