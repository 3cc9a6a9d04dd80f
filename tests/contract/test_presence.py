"""Presence reaches the bridge on every engine: the bridge (with the engine's presence source:
plugin session snapshots on Mosquitto, ``$SYS`` events + CONNZ on NATS) counts a user's live
connections on any node, follows take-overs, and sees the user go offline."""

from __future__ import annotations

import secrets

from bridge.service import Bridge
from devtools.fcm_emulator import FcmEmulator
from tests.contract.engines import EngineUnderTest
from tests.support.broker import settings_with
from tests.support.net import wait_for


def _live(bridge: Bridge, user: str, count: int) -> None:
    wait_for(
        lambda: bridge.presence.live(user) == count,
        timeout=5,
        what=f"bridge sees {user} with {count} live connection(s)",
    )


def test_presence_events_reach_the_bridge(
    engine: EngineUnderTest, fcm_emulator: FcmEmulator
) -> None:
    settings = settings_with(
        engine.settings, fcm_endpoint=fcm_emulator.url, bridge_poll_seconds=0.2
    )
    user = f"pres{secrets.token_hex(3)}"
    early = engine.connect(user, f"{user}-early", node=1)  # before the bridge: the snapshot
    bridge = Bridge(settings, instance="contract-" + secrets.token_hex(3)).start()
    try:
        bridge.wait_in_sync(15)
        _live(bridge, user, 1)
        phone = engine.connect(user, f"{user}-phone", node=0)
        _live(bridge, user, 2)
        # a take-over on another node is still two connections
        phone2 = engine.connect(user, f"{user}-phone", node=engine.nodes - 1)
        assert phone.disconnected.wait(5)
        _live(bridge, user, 2)
        early.close()
        _live(bridge, user, 1)
        phone2.close()
        _live(bridge, user, 0)
        assert bridge.presence.live(f"{user}-nobody") == 0  # in sync: unknown users are offline
    finally:
        bridge.stop()
        early.close()
