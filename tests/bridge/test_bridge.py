"""The bridge end to end: real broker with the plugin, PostgreSQL, firebase-admin → emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bridge import metrics
from bridge.credentials import ephemeral_service_account
from bridge.decision import Reason
from devtools.fcm_emulator import FcmEmulator
from plantnotify.contracts.events import utcnow
from plantnotify.contracts.topics import receipts_topic
from plantnotify.db.models import PushDecision, PushDelivery
from plantnotify.settings import Settings
from tests.bridge.conftest import BridgeFactory, PhoneFactory, World, new_user, wait_live
from tests.support.broker import BrokerFactory, BrokerHandle
from tests.support.net import wait_for


def test_offline_user_gets_exactly_one_push_at_once(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator
) -> None:
    # A grace period far longer than the wait below: a push can only come from the offline rule.
    make_bridge(fallback_grace_seconds=60)
    user = new_user()
    a, b = world.add_device(user, platform="android"), world.add_device(user, platform="ios")
    event = world.emit(user)

    d = world.final_decision(event.event_id, timeout=10)
    assert (d.state, d.reason, d.live_at_publish) == ("pushed", Reason.OFFLINE_AT_PUBLISH, 0)
    for token in (a, b):
        (got,) = wait_for(lambda t=token: fcm_emulator.deliveries(t), what="the push")
        msg = got["message"]
        assert msg["data"] == {
            "event": "AnalysisCompleted",
            "eventId": event.event_id,
            "analysisId": event.analysis_id,
            "deepLink": f"app://analysis/{event.analysis_id}",
        }
        assert msg["notification"]["title"] == "Analysis complete"
        assert "Tomato" in msg["notification"]["body"] and "81/100" in msg["notification"]["body"]
        assert msg["android"]["collapse_key"] == event.analysis_id
        assert msg["android"]["priority"] == "high"
        assert msg["apns"]["headers"]["apns-priority"] == "10"
        assert msg["apns"]["headers"]["apns-collapse-id"] == event.analysis_id
    rows = world.finished(event.event_id, 2)
    assert set(rows) == {a, b}
    for r in rows.values():
        assert r.status == "sent" and r.attempts == 1 and r.fcm_message_id
        (att,) = world.attempts(r.id)
        assert (att.outcome, att.http_status) == ("sent", 200)
    time.sleep(0.5)  # nothing more arrives later
    assert len(fcm_emulator.deliveries(a)) == 1 and len(fcm_emulator.deliveries(b)) == 1


def test_live_device_that_confirms_gets_no_push(
    make_bridge: BridgeFactory, world: World, phone: PhoneFactory, fcm_emulator: FcmEmulator
) -> None:
    bridge = make_bridge(fallback_grace_seconds=5)
    user = new_user()
    token = world.add_device(user)
    p = phone(user)
    wait_live(bridge, user, 1)
    event = world.emit(user)
    got = p.client.wait_message(timeout=5)
    assert event.event_id.encode() in got.payload
    assert p.confirm(event.event_id) == 0

    d = world.final_decision(event.event_id)
    assert (d.state, d.reason) == ("suppressed", Reason.RECEIPT)
    assert d.receipt_at is not None and d.live_at_publish == 1
    assert world.deliveries(event.event_id) == []
    assert fcm_emulator.deliveries(token) == []


def test_live_device_that_never_confirms_is_pushed_after_the_grace_period(
    make_bridge: BridgeFactory, world: World, phone: PhoneFactory, fcm_emulator: FcmEmulator
) -> None:
    # Also what a half-open connection looks like: live to the broker, silent to us.
    bridge = make_bridge(fallback_grace_seconds=1.0)
    user = new_user()
    token = world.add_device(user)
    p = phone(user)
    wait_live(bridge, user, 1)
    event = world.emit(user, kind="failed")
    p.client.wait_message(timeout=5)  # the device got it but never says so

    d = world.final_decision(event.event_id)
    assert (d.state, d.reason, d.live_at_publish) == ("pushed", Reason.GRACE_EXPIRED, 1)
    assert d.decided_at is not None and d.decided_at - d.published_at >= timedelta(seconds=1.0)
    (got,) = wait_for(lambda: fcm_emulator.deliveries(token), what="the push")
    assert got["message"]["notification"]["title"] == "Analysis failed"
    assert got["message"]["data"]["event"] == "AnalysisFailed"


def test_device_that_disconnects_during_the_grace_period_is_pushed_at_once(
    make_bridge: BridgeFactory, world: World, phone: PhoneFactory, fcm_emulator: FcmEmulator
) -> None:
    bridge = make_bridge(fallback_grace_seconds=60)
    user = new_user()
    token = world.add_device(user)
    p = phone(user)
    wait_live(bridge, user, 1)
    event = world.emit(user)
    wait_for(lambda: world.decision(event.event_id), what="the event taken in")
    assert world.decision(event.event_id).state == "pending"  # type: ignore[union-attr]
    p.close()  # gone without a receipt

    d = world.final_decision(event.event_id, timeout=10)  # long before the 60 s grace
    assert (d.state, d.reason) == ("pushed", Reason.WENT_OFFLINE)
    wait_for(lambda: fcm_emulator.deliveries(token), what="the push")


def test_two_devices_one_confirms_means_no_push_to_either(
    make_bridge: BridgeFactory, world: World, phone: PhoneFactory, fcm_emulator: FcmEmulator
) -> None:
    # Receipts are per event, not per device: one device showing the result is enough.
    bridge = make_bridge(fallback_grace_seconds=2)
    user = new_user()
    tokens = [world.add_device(user), world.add_device(user, platform="ios")]
    first, second = phone(user, "phone"), phone(user, "tablet")
    wait_live(bridge, user, 2)
    event = world.emit(user)
    first.client.wait_message(timeout=5)
    second.client.wait_message(timeout=5)
    second.confirm(event.event_id)

    d = world.final_decision(event.event_id)
    assert (d.state, d.live_at_publish) == ("suppressed", 2)
    assert world.deliveries(event.event_id) == []
    assert all(fcm_emulator.deliveries(t) == [] for t in tokens)


def test_progress_events_are_never_pushed(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator
) -> None:
    make_bridge()
    user = new_user()
    token = world.add_device(user)
    progress = world.emit(user, kind="progress")
    done = world.emit(user)  # a terminal event after it, as a marker that the bridge caught up
    world.final_decision(done.event_id)
    time.sleep(0.5)  # two more sweeps
    assert world.decision(progress.event_id) is None
    assert [m["message"]["data"]["eventId"] for m in fcm_emulator.deliveries(token)] == [
        done.event_id
    ]


def test_dead_and_invalid_tokens_remove_the_device_and_keep_the_others(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator
) -> None:
    make_bridge()
    user = new_user()
    dead = world.add_device(user, "dead-" + new_user())
    bad = world.add_device(user, "bad-" + new_user())
    good = world.add_device(user)
    event = world.emit(user)

    wait_for(lambda: world.devices(user) == {good}, what="dead devices removed")
    rows = world.finished(event.event_id, 3)
    assert rows[dead].status == rows[bad].status == "device_removed"
    assert rows[good].status == "sent"
    assert [a.error_code for a in world.attempts(rows[dead].id)] == ["UNREGISTERED"]
    assert [a.http_status for a in world.attempts(rows[bad].id)] == [400]
    assert len(fcm_emulator.deliveries(good)) == 1


def test_quota_limited_push_honours_retry_after_then_delivers(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator
) -> None:
    make_bridge(fcm_retry_base_seconds=0.05)  # the back-off alone would retry after < 0.05 s
    user = new_user()
    token = world.add_device(user, "quota-" + new_user())
    event = world.emit(user)

    (row,) = wait_for(
        lambda: [r for r in world.deliveries(event.event_id) if r.status == "sent"], what="sent"
    )
    first, second = world.attempts(row.id)
    assert (first.outcome, first.http_status, first.error_code, first.retry_after) == (
        "retry",
        429,
        "QUOTA_EXCEEDED",
        1.0,
    )
    assert second.outcome == "sent"
    # Retry-After: 1 was honoured (the emulator saw the two requests at least 1 s apart).
    seen = [a["at"] for a in fcm_emulator.attempts(token)]
    assert len(seen) == 2 and seen[1] - seen[0] >= 1.0


def test_quota_that_never_clears_ends_exhausted_and_keeps_the_device(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator
) -> None:
    make_bridge(fcm_max_attempts=2)
    user = new_user()
    token = world.add_device(user, "exhaust-" + new_user())
    event = world.emit(user)

    (row,) = wait_for(
        lambda: [r for r in world.deliveries(event.event_id) if r.status == "exhausted"],
        timeout=10,
        what="exhausted",
    )
    assert [a.outcome for a in world.attempts(row.id)] == ["retry", "retry"]
    assert row.attempts == 2 and row.finished_at is not None
    assert world.devices(user) == {token}
    assert len(fcm_emulator.attempts(token)) == 2 and fcm_emulator.deliveries(token) == []


def test_oauth_token_endpoint_error_is_a_configuration_problem_not_the_devices_fault(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator, tmp_path: Path
) -> None:
    # A real credentials file (FCM_CREDENTIALS_FILE) whose token_uri is honoured; the token
    # endpoint refuses this service account (as Google does for a deleted key).
    sa = ephemeral_service_account(
        fcm_emulator.token_uri,
        "revoked-project",
        client_email="revoked-key@p.iam.gserviceaccount.com",
    )
    creds = tmp_path / "sa.json"
    creds.write_text(json.dumps(sa))
    before = metrics.CONFIG_ERRORS._value.get()
    make_bridge(fcm_credentials_file=creds, fcm_config_retry_seconds=30)
    user = new_user()
    token = world.add_device(user)
    event = world.emit(user)

    (row,) = wait_for(
        lambda: [
            r for r in world.deliveries(event.event_id) if r.attempts and r.status == "pending"
        ],
        what="a recorded configuration failure",
    )
    (att,) = world.attempts(row.id)
    assert (att.outcome, att.error_code) == ("config", "OAUTH_REFRESH")
    assert "invalid_grant" in (att.detail or "")
    assert row.next_attempt_at - att.finished_at >= timedelta(seconds=20)  # retried later
    assert world.devices(user) == {token}  # not blamed on the device
    assert metrics.CONFIG_ERRORS._value.get() == before + 1
    assert fcm_emulator.attempts(token) == []


def test_malformed_and_foreign_receipts_change_nothing(
    make_bridge: BridgeFactory,
    world: World,
    phone: PhoneFactory,
    fcm_emulator: FcmEmulator,
    broker: BrokerHandle,
) -> None:
    bridge = make_bridge(fallback_grace_seconds=2.0)
    victim, attacker = new_user(), new_user()
    token = world.add_device(victim)
    p, q = phone(victim), phone(attacker)
    wait_live(bridge, victim, 1)
    wait_live(bridge, attacker, 1)
    malformed_before = metrics.RECEIPTS.labels("malformed")._value.get()
    foreign_before = metrics.RECEIPTS.labels("foreign")._value.get()
    event = world.emit(victim)
    p.client.wait_message(timeout=5)

    bad_payloads = [
        b"",
        b"not json",
        b"{",
        b"[]",
        b"null",
        b'{"eventId": 5}',
        b'{"eventId": ""}',
        b'{"eventId": ["' + event.event_id.encode() + b'"]}',
        b'{"eventID": "' + event.event_id.encode() + b'"}',
        b'{"eventId": "' + b"x" * 5000 + b'"}',
        b'{"eventId": "a\\u0000b"}',
        bytes(range(256)),
    ]
    for raw in bad_payloads:
        assert p.confirm(event.event_id, raw=raw) == 0
    # Another user confirming the victim's event on its own topic: not the owner, ignored.
    assert q.confirm(event.event_id) == 0
    # ...and it cannot even publish on the victim's receipts topic (the broker refuses it).
    assert q.client.publish(receipts_topic(victim), b'{"eventId": "x"}') >= 0x80

    d = world.final_decision(event.event_id)
    assert (d.state, d.reason) == ("pushed", Reason.GRACE_EXPIRED)
    assert world.receipt(event.event_id) is None
    wait_for(lambda: fcm_emulator.deliveries(token), what="the push")
    assert (
        metrics.RECEIPTS.labels("malformed")._value.get() - malformed_before
        >= len(bad_payloads) - 1
    )
    assert metrics.RECEIPTS.labels("foreign")._value.get() - foreign_before >= 1
    # The bridge is unharmed: the next event with a proper receipt is suppressed.
    nxt = world.emit(victim)
    p.confirm(nxt.event_id)
    assert world.final_decision(nxt.event_id).state == "suppressed"


def test_two_bridges_push_each_event_and_device_once(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator
) -> None:
    make_bridge(instance="twin-a")
    make_bridge(instance="twin-b")
    users = [new_user() for _ in range(6)]
    tokens = {u: [world.add_device(u), world.add_device(u, platform="web")] for u in users}
    events = [world.emit(u) for u in users for _ in range(3)]

    for e in events:
        for row in world.finished(e.event_id, 2).values():
            assert row.status == "sent" and row.attempts == 1
            assert len(world.attempts(row.id)) == 1  # never sent twice, not even attempted twice
    for u in users:
        for t in tokens[u]:
            got = sorted(m["message"]["data"]["eventId"] for m in fcm_emulator.deliveries(t))
            assert got == sorted(e.event_id for e in events if e.user_id == u)
    deciders = {world.decision(e.event_id).decided_by for e in events}  # type: ignore[union-attr]
    assert deciders <= {"twin-a", "twin-b"}


def test_broker_restart_while_users_are_connected_rebuilds_the_picture(
    broker_factory: BrokerFactory,
    make_bridge: BridgeFactory,
    phone: PhoneFactory,
    fcm_emulator: FcmEmulator,
) -> None:
    b = broker_factory()
    bridge = make_bridge(base=b.settings, fallback_grace_seconds=30)
    stays, leaves = new_user(), new_user()
    w = World(b.settings)
    try:
        stay_token, leave_token = w.add_device(stays), w.add_device(leaves)
        phone(stays, handle=b)
        phone(leaves, handle=b)
        wait_live(bridge, stays, 1)
        wait_live(bridge, leaves, 1)
        old_boot = bridge.picture.boot_id

        b.restart()  # every connection drops; the bridge must not keep believing in them
        wait_for(
            lambda: bridge.picture.known and bridge.picture.boot_id != old_boot,
            timeout=15,
            what="the bridge back in sync with the new broker boot",
        )
        back = phone(stays, "phone2", handle=b)  # only one of the two users comes back
        wait_live(bridge, stays, 1)
        assert bridge.picture.live(leaves) == 0  # its snapshot is from the old boot: stale

        gone = w.emit(leaves)
        here = w.emit(stays)
        back.client.wait_message(timeout=5)
        back.confirm(here.event_id)
        d_gone = w.final_decision(gone.event_id)  # long before the 30 s grace
        assert (d_gone.state, d_gone.reason) == ("pushed", Reason.OFFLINE_AT_PUBLISH)
        d_here = w.final_decision(here.event_id)
        assert (d_here.state, d_here.live_at_publish) == ("suppressed", 1)
        wait_for(lambda: fcm_emulator.deliveries(leave_token), what="the push to the absent user")
        assert fcm_emulator.deliveries(stay_token) == []
    finally:
        w.close()


def _bridge_process(
    settings: Settings, log_path: Path, **env_overrides: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FCM_", "BRIDGE_", "MQTT_"))}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = str(value)
    env.update(env_overrides)
    return subprocess.Popen(
        [sys.executable, "-m", "plantnotify.cli", "bridge", "--no-metrics"],
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_in_sync(proc: subprocess.Popen[bytes], log_path: Path, count: int) -> None:
    def check() -> bool:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        return log_path.read_text().count("session picture in sync") >= count

    wait_for(check, timeout=30, what="the bridge process in sync")


def test_bridge_killed_mid_grace_pushes_exactly_once_after_restart(
    settings: Settings,
    world: World,
    phone: PhoneFactory,
    fcm_emulator: FcmEmulator,
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "bridge.log"
    env = {
        "FCM_ENDPOINT": fcm_emulator.url,
        "FALLBACK_GRACE_SECONDS": "2",
        "BRIDGE_POLL_SECONDS": "0.2",
        "BRIDGE_INSTANCE": "killed-" + new_user(),  # the same name after the restart
        "BRIDGE_SESSION_EXPIRY_SECONDS": "120",
    }
    proc = _bridge_process(settings, log_path, **env)
    try:
        _wait_in_sync(proc, log_path, 1)
        silent, confirming = new_user(), new_user()
        silent_token, confirming_token = world.add_device(silent), world.add_device(confirming)
        phone(silent)
        p2 = phone(confirming)
        time.sleep(0.5)  # the plugin's snapshots reach the bridge
        pushed_later = world.emit(silent)
        confirmed_later = world.emit(confirming)
        for e in (pushed_later, confirmed_later):
            wait_for(lambda e=e: world.decision(e.event_id), what="the decision recorded")
            assert world.decision(e.event_id).state == "pending"  # type: ignore[union-attr]

        proc.send_signal(signal.SIGKILL)  # mid-grace
        proc.wait(10)
        p2.client.wait_message(timeout=5)
        p2.confirm(confirmed_later.event_id)  # while no bridge runs: the broker keeps it for us
        time.sleep(2.2)  # the grace period ends while the bridge is dead
        assert world.decision(pushed_later.event_id).state == "pending"  # type: ignore[union-attr]
        assert fcm_emulator.deliveries(silent_token) == []

        proc = _bridge_process(settings, log_path, **env)
        _wait_in_sync(proc, log_path, 2)
        d = world.final_decision(pushed_later.event_id)
        assert (d.state, d.reason) == ("pushed", Reason.GRACE_EXPIRED)
        assert world.final_decision(confirmed_later.event_id).state == "suppressed"
        wait_for(lambda: fcm_emulator.deliveries(silent_token), what="the push after restart")
        time.sleep(1.0)
        assert len(fcm_emulator.deliveries(silent_token)) == 1
        assert fcm_emulator.deliveries(confirming_token) == []

        proc.send_signal(signal.SIGTERM)  # clean shutdown
        assert proc.wait(15) == 0
        assert "bridge stopped" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_receipt_that_arrives_before_the_bridge_took_the_event_in_still_counts(
    make_bridge: BridgeFactory, world: World, phone: PhoneFactory, fcm_emulator: FcmEmulator
) -> None:
    # The device gets the event at the same moment as the bridge and may answer first.
    bridge = make_bridge(fallback_grace_seconds=60)
    user = new_user()
    token = world.add_device(user)
    p = phone(user)
    wait_live(bridge, user, 1)
    event = world.event(user)
    world.store(event)  # committed, not yet published
    p.confirm(event.event_id)
    wait_for(lambda: world.receipt(event.event_id), what="the receipt recorded")
    world.publish(event)

    d = world.final_decision(event.event_id, timeout=10)  # not after the 60 s grace
    assert d.state == "suppressed"
    assert fcm_emulator.deliveries(token) == []


def test_a_push_whose_sender_died_mid_send_is_retried_and_recorded_as_unknown(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator
) -> None:
    # What a bridge SIGKILLed between leasing a delivery and recording it leaves behind.
    user = new_user()
    token = world.add_device(user)
    event = world.event(user)
    world.store(event, published=True)
    now = utcnow()
    with world.db.begin() as s:
        s.add(
            PushDecision(
                event_id=event.event_id,
                user_id=user,
                analysis_id=event.analysis_id,
                event_type=str(event.event),
                published_at=now,
                live_at_publish=0,
                due_at=now,
                state="pushed",
                decided_at=now,
            )
        )
        s.flush()
        s.add(
            PushDelivery(
                event_id=event.event_id,
                user_id=user,
                device_token=token,
                platform="android",
                status="sending",
                attempts=1,
                next_attempt_at=now - timedelta(seconds=1),  # the lease ran out
            )
        )
    make_bridge()

    (row,) = world.finished(event.event_id, 1).values()
    assert (row.status, row.attempts) == ("sent", 2)
    assert [a.outcome for a in world.attempts(row.id)] == ["unknown", "sent"]
    assert len(fcm_emulator.deliveries(token)) == 1


def test_an_event_mqtt_never_delivered_is_found_by_an_incremental_sweep(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator
) -> None:
    """Sweeps after the first complete one look back only a margin (not the whole look-back
    window): an event that became published after them, and that the bridge never saw on MQTT,
    is still taken in and pushed."""
    bridge = make_bridge(fallback_grace_seconds=60)
    time.sleep(1.0)  # several sweeps, the later ones incremental
    assert bridge.intake._swept_until is not None
    user = new_user()
    token = world.add_device(user)
    event = world.event(user)
    world.store(event, published=True)  # in the events table only: no MQTT publication

    d = world.final_decision(event.event_id, timeout=10)
    assert (d.state, d.reason) == ("pushed", Reason.OFFLINE_AT_PUBLISH)
    wait_for(lambda: fcm_emulator.deliveries(token), what="the push")


def test_bridges_of_one_share_group_split_the_events_and_push_each_once(
    make_bridge: BridgeFactory, world: World, fcm_emulator: FcmEmulator
) -> None:
    taken: dict[str, list[str]] = {"share-a": [], "share-b": []}
    bridges = [
        make_bridge(instance=name, bridge_share_group="t", fallback_grace_seconds=60)
        for name in taken
    ]
    for b, name in zip(bridges, taken, strict=True):
        assert b.events_filter == "$share/t/users/+/analyses/+"
        follow = b.intake.event

        def event(uid: str, aid: str, msg: Any, follow: Any = follow, name: str = name) -> bool:
            if follow(uid, aid, msg):
                taken[name].append(aid)
                return True
            return False

        b.intake.event = event  # type: ignore[method-assign]
    users = [new_user() for _ in range(4)]
    tokens = {u: world.add_device(u) for u in users}
    events = [world.emit(u) for u in users for _ in range(4)]

    for e in events:
        (row,) = world.finished(e.event_id, 1, timeout=20).values()
        assert row.status == "sent" and row.attempts == 1
    for u in users:
        got = sorted(m["message"]["data"]["eventId"] for m in fcm_emulator.deliveries(tokens[u]))
        assert got == sorted(e.event_id for e in events if e.user_id == u)
    # each publication went to one member of the group: both had some, none had one twice
    everything = taken["share-a"] + taken["share-b"]
    assert taken["share-a"] and taken["share-b"]
    assert sorted(everything) == sorted(e.analysis_id for e in events)
