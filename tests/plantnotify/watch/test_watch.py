"""``plantnotify watch`` against the running system (``live_stack``): persistent session,
de-duplication, receipts, token renewal, FCM registration and the ``--json`` stream."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from plantnotify import cli
from plantnotify.contracts.events import AnalysisCompleted
from plantnotify.contracts.topics import receipts_topic
from plantnotify.db.models import Device
from plantnotify.db.session import engine_for, session_factory
from plantnotify.watch.api import ApiClient
from plantnotify.watch.output import JsonLines
from plantnotify.watch.watcher import Watcher, WatchOptions
from tests.support.live_stack import (
    REALTIME_TOKEN_TTL,
    ApiServer,
    LiveStack,
    ServiceSubscriber,
    leaf_jpeg,
    publish_as_service,
)
from tests.support.net import wait_for

ROOT = Path(__file__).resolve().parents[3]


class Running:
    """A Watcher on its own thread, its --json lines collected."""

    def __init__(self, watcher: Watcher, stream: io.StringIO) -> None:
        self.watcher = watcher
        self.stream = stream
        self.thread = threading.Thread(target=watcher.run, daemon=True)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def events(self) -> list[dict[str, Any]]:
        return [doc for doc in self.lines() if doc["type"] == "event"]

    def event_ids(self) -> list[str]:
        return [doc["event"]["eventId"] for doc in self.events()]

    def connects(self) -> int:
        return sum(1 for d in self.lines() if d["type"] == "status" and d["state"] == "connected")

    def stop(self) -> None:
        self.watcher.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def account(live_stack: LiveStack) -> tuple[str, str, str]:
    return live_stack.register()


@pytest.fixture
def start_watch(
    live_stack: LiveStack, account: tuple[str, str, str], tmp_path: Path
) -> Iterator[Callable[..., Running]]:
    username, password, _ = account
    running: list[Running] = []

    def start(device: str = "phone", **options: Any) -> Running:
        stream = io.StringIO()
        api = ApiClient(live_stack.api_url, username, password)
        watcher = Watcher(
            api,
            JsonLines(stream),
            WatchOptions(device=device, state_dir=tmp_path / "state", **options),
        )
        watcher.prepare()
        r = Running(watcher, stream)
        r.thread.start()
        running.append(r)
        wait_for(lambda: r.connects() >= 1, timeout=10, what="the watcher to connect")
        return r

    yield start
    for r in running:
        if r.thread.is_alive():
            r.stop()


def synthetic_completed(user_id: str) -> dict[str, Any]:
    """An event of the contract's shape for an analysis that only exists on the wire."""
    return AnalysisCompleted(
        analysis_id=str(uuid.uuid4()),
        user_id=user_id,
        crop_type="wheat",
        overall_health_score=55,
        primary_concern="Leaf rust",
        image_url="http://127.0.0.1/unused",
    ).to_wire()


def test_events_published_while_offline_arrive_on_return(
    live_stack: LiveStack, account: tuple[str, str, str], start_watch: Callable[..., Running]
) -> None:
    username, password, user_id = account
    first = start_watch("pixel7")
    assert first.watcher.client_id == f"{user_id}-pixel7"
    first.stop()  # the device goes offline; its session stays on the broker

    # One real analysis (worker path, retained) and one event that is NOT retained: only the
    # persistent session can deliver the second one.
    with ServiceSubscriber(live_stack, user_id) as sub:
        analysis_id = live_stack.upload(live_stack.login(username, password), leaf_jpeg(3))
        sub.first(analysis_id, "AnalysisCompleted")
    not_retained = synthetic_completed(user_id)
    publish_as_service(live_stack, not_retained, retain=False)

    back = start_watch("pixel7")  # same device: same client id, session resumed
    wait_for(
        lambda: not_retained["eventId"] in back.event_ids(),
        timeout=10,
        what="the event queued in the persistent session",
    )
    completed = [e for e in back.events() if e["event"]["event"] == "AnalysisCompleted"]
    assert {e["event"]["analysisId"] for e in completed} >= {
        analysis_id,
        not_retained["analysisId"],
    }
    queued = next(e for e in back.events() if e["event"]["eventId"] == not_retained["eventId"])
    assert queued["source"] == "live"  # delivered from the session queue, not a retained copy


def test_each_event_is_shown_once_and_receipted(
    live_stack: LiveStack, account: tuple[str, str, str], start_watch: Callable[..., Running]
) -> None:
    _, _, user_id = account
    with ServiceSubscriber(live_stack, user_id, receipts_topic(user_id)) as receipts:
        watch = start_watch("tablet")
        event = synthetic_completed(user_id)
        for _ in range(3):  # QoS-1 duplicates and a retained re-publish of the same event
            publish_as_service(live_stack, event, retain=True)
        wait_for(
            lambda: event["eventId"] in {p["eventId"] for p in receipts.payloads()},
            timeout=10,
            what="a receipt on users/{id}/receipts",
        )
        wait_for(lambda: watch.watcher.stats["duplicates"] >= 2, timeout=10, what="duplicates")
    assert watch.event_ids().count(event["eventId"]) == 1
    for receipt in receipts.payloads():
        # "this device has the event", and when, how and which device (issue 16's timeline)
        assert set(receipt) == {"eventId", "receivedAt", "transport", "clientId"}, receipt
        assert receipt["transport"] == "tcp"
        assert receipt["clientId"] == watch.watcher.client_id
        assert abs(receipt["receivedAt"] / 1000 - time.time()) < 60

    # A restart of the same device does not show it again (seen ids are kept on disk).
    watch.stop()
    again = start_watch("tablet")
    wait_for(lambda: again.watcher.stats["duplicates"] >= 1, timeout=10, what="retained replay")
    assert event["eventId"] not in again.event_ids()


def test_token_is_renewed_and_the_session_keeps_delivering(
    live_stack: LiveStack, account: tuple[str, str, str], start_watch: Callable[..., Running]
) -> None:
    _, _, user_id = account
    watch = start_watch("renewing")
    wait_for(
        lambda: watch.watcher.stats["tokens"] >= 2 and watch.connects() >= 2,
        timeout=REALTIME_TOKEN_TTL + 5,
        what="a reconnect with a renewed token",
    )
    event = synthetic_completed(user_id)
    publish_as_service(live_stack, event, retain=False)
    wait_for(
        lambda: event["eventId"] in watch.event_ids(), timeout=10, what="delivery after renewal"
    )
    disconnects = [
        d for d in watch.lines() if d["type"] == "status" and d["state"] == "reconnecting"
    ]
    assert all("not authorized" not in str(d.get("reason", "")).lower() for d in disconnects)


def test_cli_json_stream_registers_fcm_token_and_exits_after_count(
    live_stack: LiveStack, account: tuple[str, str, str], tmp_path: Path
) -> None:
    username, password, user_id = account
    fcm_token = "fcm-test-" + uuid.uuid4().hex
    env = {
        **os.environ,
        "PLANTNOTIFY_API": live_stack.api_url,
        "PLANTNOTIFY_USERNAME": username,
        "PLANTNOTIFY_PASSWORD": password,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "plantnotify.cli", "watch", "--json", "--device", "cli",
         "--count", "1", "--duration", "60", "--fcm-token", fcm_token, "--platform", "ios",
         "--state-dir", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for raw in proc.stdout:
            lines.append(json.loads(raw))
            if lines[-1].get("state") == "connected":
                break
        analysis_id = live_stack.upload(live_stack.login(username, password), leaf_jpeg(5), "rice")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines += [json.loads(line) for line in out.splitlines()]
    assert [d["state"] for d in lines if d["type"] == "status"][:2] == [
        "device-registered",
        "connected",
    ]
    events = [d for d in lines if d["type"] == "event"]
    final = events[-1]
    assert final["event"]["event"] == "AnalysisCompleted"
    assert final["event"]["analysisId"] == analysis_id
    assert final["event"]["deepLink"] == f"app://analysis/{analysis_id}"
    assert final["source"] in {"live", "retained", "recovered"}
    datetime.fromisoformat(final["receivedAt"])
    assert password not in err and username not in err

    with session_factory(engine_for(live_stack.settings.database_url))() as s:
        device = s.scalar(select(Device).where(Device.token == fcm_token))
    assert device is not None and device.user_id == user_id and device.platform == "ios"


def test_cli_says_what_to_do_on_bad_credentials(
    live_stack: LiveStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PLANTNOTIFY_USERNAME", "PLANTNOTIFY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    wrong = ["watch", "--api", live_stack.api_url, "--username", "nobody-" + uuid.uuid4().hex[:8]]
    assert cli.main([*wrong, "--password", "wrong-password"]) == 1
    assert "wrong username or password" in capsys.readouterr().err
    assert cli.main(["watch", "--api", live_stack.api_url]) == 2
    assert "--username" in capsys.readouterr().err
    assert (
        cli.main(["watch", "--api", "http://127.0.0.1:9", "--username", "a", "--password", "b"])
        == 1
    )
    assert "cannot reach the API" in capsys.readouterr().err


def test_the_api_client_renews_with_the_refresh_token_not_the_password(
    live_stack: LiveStack, account: tuple[str, str, str]
) -> None:
    username, password, user_id = account
    settings = live_stack.settings.model_copy(update={"access_token_ttl_seconds": 3})
    server = ApiServer(settings).start()
    api = ApiClient(server.url, username, password)
    try:
        first = api.log_in()
        assert first.refresh_token
        time.sleep(2.6)  # inside the renewal margin (20 % of 3 s)
        grant = api.realtime_grant()
        assert grant.username == user_id
        assert api.renewals == 1 and api.relogins == 0
        assert api.login is not None and api.login.refresh_token != first.refresh_token
        # Ended elsewhere: the next renewal is refused; it says so and logs in again.
        r = httpx.post(
            f"{server.url}/api/v1/auth/logout-all",
            headers={"Authorization": f"Bearer {api.login.access_token}"},
        )
        assert r.status_code == 204
        time.sleep(2.6)
        api.realtime_grant()
        assert api.relogins == 1
        spent = api.login.refresh_token
    finally:
        api.close()  # logs out: the refresh token is revoked
        server.server.force_exit = True
        server.stop()
    r = httpx.post(f"{live_stack.api_url}/api/v1/auth/refresh", json={"refreshToken": spent})
    assert r.status_code == 401
