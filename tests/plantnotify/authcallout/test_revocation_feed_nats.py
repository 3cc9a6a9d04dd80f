"""Attack (issue 14) on the NATS engine: the real API and its revocation feed, a 3-node cluster
with its auth callouts, PostgreSQL. A logged-out user's connection is closed within 5 s on
any node and their token refused; the callouts get every revocation in force from the feed
when they start (database = source of truth): a callout killed and started again still
refuses the revoked token, and with ``MQTT_REVOCATION_SYNC_SECONDS`` users wait for that.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from plantnotify.settings import Settings, load_settings
from tests.support import mqtt
from tests.support.api import User, login, register
from tests.support.mqtt import V311
from tests.support.nats import NatsHandle, start_nats_cluster

REALTIME = "/api/v1/realtime/token"
OUT_WITHIN = 5.0
SYNC_SECONDS = 60


@pytest.fixture
def cluster(base_settings: Settings, tmp_path: Path) -> Iterator[NatsHandle]:
    handle = start_nats_cluster(
        base_settings,
        tmp_path / "nats",
        mqtt_leeway_seconds=1,
        mqtt_revocation_sync_seconds=SYNC_SECONDS,
    )
    yield handle
    handle.cluster.stop()


def _token(client: TestClient, user: User) -> str:
    r = client.post(REALTIME, headers=user.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _accepted_within(port: int, user: User, token: str, cid: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            mqtt.connect(port, user.user_id, token, cid, protocol=V311).close()
            return
        except mqtt.ConnectRefused:
            assert time.monotonic() < deadline, f"{cid} not accepted within {seconds} s"
            time.sleep(0.3)


def test_logout_on_nats_kicks_within_5s_and_survives_a_callout_restart(
    cluster: NatsHandle, api_rabbitmq_url: str
) -> None:
    settings = load_settings(
        **{**cluster.settings.model_dump(), "rabbitmq_url": api_rabbitmq_url, "max_upload_mb": 1}
    )
    ports = cluster.ports
    # no feed yet: users wait for the revocations (services do not: the feed is one)
    assert mqtt.refused(ports[1], "early1", cluster.token("early1"), "early1-x", protocol=V311)
    mqtt.connect(
        ports[1],
        "svc-early",
        cluster.token("svc-early", service=True),
        "svc-early-1",
        protocol=V311,
    ).close()

    with TestClient(create_app(settings)) as client:
        user = register(client)
        token = _token(client, user)
        # the feed answers every callout's request: users get in well before SYNC_SECONDS
        for i, port in enumerate(ports):
            _accepted_within(port, user, token, f"{user.user_id}-n{i}", 15)
        phone = login(client, user)
        laptop_token, phone_token = token, _token(client, phone)
        laptop = mqtt.connect(
            ports[2], user.user_id, laptop_token, f"{user.user_id}-laptop", protocol=V311
        )
        try:
            t0 = time.monotonic()
            assert client.post("/api/v1/auth/logout", headers=user.headers).status_code == 204
            assert laptop.disconnected.wait(OUT_WITHIN), "still connected 5 s after logout"
            assert time.monotonic() - t0 < OUT_WITHIN
            for port in ports:
                assert mqtt.refused(
                    port, user.user_id, laptop_token, f"{user.user_id}-laptop", protocol=V311
                )
            # the other login still opens the broker
            mqtt.connect(
                ports[0], user.user_id, phone_token, f"{user.user_id}-phone", protocol=V311
            ).close()

            # a callout killed and started again learns the revocation from the feed before it
            # lets users in: it never accepts the revoked token
            for i in range(len(ports)):
                cluster.cluster.kill_callout(i)
            cluster.cluster.start_callout(0)
            assert mqtt.refused(
                ports[0], user.user_id, laptop_token, f"{user.user_id}-x", protocol=V311
            )
            _accepted_within(ports[0], user, phone_token, f"{user.user_id}-phone", 15)
            for _ in range(5):
                assert mqtt.refused(
                    ports[1], user.user_id, laptop_token, f"{user.user_id}-y", protocol=V311
                )
        finally:
            laptop.close()
