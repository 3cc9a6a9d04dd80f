"""A restarted bridge (same ``BRIDGE_INSTANCE``, so the broker kept its session) is not sent
every retained event again, on any engine: on MQTT 5 by Retain Handling, on MQTT 3.1.1 (NATS)
by not subscribing again to what the kept session already has. New events still arrive live
(retain 0) and the retained replays a first start gets are skipped (retain 1)."""

from __future__ import annotations

import secrets
import threading

from bridge.service import Bridge
from devtools.fcm_emulator import FcmEmulator
from plantnotify.contracts.events import AnalysisCompleted
from plantnotify.contracts.topics import analysis_topic
from plantnotify.mqtt import Message
from tests.contract.engines import EngineUnderTest
from tests.support.broker import settings_with
from tests.support.net import wait_for


def _counting_bridge(settings: object, instance: str) -> tuple[Bridge, list[Message]]:
    bridge = Bridge(settings, instance=instance)  # type: ignore[arg-type]
    seen: list[Message] = []
    lock = threading.Lock()
    follow = bridge.loop.message

    def message(m: Message) -> None:
        if "/analyses/" in m.topic:
            with lock:
                seen.append(m)
        follow(m)

    bridge.loop.message = message  # type: ignore[method-assign]
    return bridge.start(), seen


def test_a_restarted_bridge_is_not_sent_the_retained_events_again(
    engine: EngineUnderTest, fcm_emulator: FcmEmulator
) -> None:
    settings = settings_with(
        engine.settings,
        fcm_endpoint=fcm_emulator.url,
        bridge_poll_seconds=0.2,
        bridge_session_expiry_seconds=120,
    )
    instance = "replay-" + secrets.token_hex(3)
    user = f"rpl{secrets.token_hex(3)}"
    first, _ = _counting_bridge(settings, instance)
    first.wait_in_sync(15)
    first.mqtt.wait_connected(10)
    first.stop()
    svc = engine.service("replay-pub", node=1)
    try:
        retained = [
            AnalysisCompleted(analysis_id=f"r{i}", user_id=user, image_url="/i") for i in range(5)
        ]
        for e in retained:
            svc.publish(analysis_topic(user, e.analysis_id), e.to_json_bytes(), retain=True)
        again, seen = _counting_bridge(settings, instance)
        try:
            again.wait_in_sync(15)
            again.mqtt.wait_connected(10)
            live = AnalysisCompleted(analysis_id="live", user_id=user, image_url="/i")
            svc.publish(analysis_topic(user, "live"), live.to_json_bytes(), retain=True)
            wait_for(
                lambda: any(m.topic == analysis_topic(user, "live") for m in seen),
                timeout=10,
                what="the live event at the restarted bridge",
            )
            mine = [m for m in seen if m.topic.startswith(f"users/{user}/")]
            assert [(m.topic, m.retain) for m in mine] == [(analysis_topic(user, "live"), False)]
        finally:
            again.stop()
    finally:
        for e in retained:
            svc.publish(analysis_topic(user, e.analysis_id), b"", retain=True)
        svc.publish(analysis_topic(user, "live"), b"", retain=True)
        svc.close()
