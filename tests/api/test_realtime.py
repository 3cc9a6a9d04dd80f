"""``POST /realtime/token``: claims checked, and the credentials really open our Mosquitto
(with the JWT plugin) for the caller's own topics only."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import jwt
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from plantnotify.contracts import topics
from plantnotify.settings import Settings
from tests.support import mqtt
from tests.support.api import SettingsFactory, User
from tests.support.nats import NatsHandle

REALTIME = "/api/v1/realtime/token"


def test_realtime_token_shape_and_claims(
    client: TestClient, alice: User, api_settings: Settings
) -> None:
    r = client.post(REALTIME, headers=alice.headers)
    assert r.status_code == 200
    body = r.json()
    uid = alice.user_id
    assert body["username"] == uid
    assert body["clientIdPrefix"] == f"{uid}-"
    assert body["topics"] == {
        "analyses": f"users/{uid}/analyses/+",
        "receipts": f"users/{uid}/receipts",
    }
    assert body["mqtt"]["host"] == api_settings.mqtt_host
    assert body["mqtt"]["port"] == api_settings.mqtt_port
    assert body["mqtt"]["protocolVersion"] == 5  # Mosquitto
    assert urlsplit(body["mqtt"]["wsUrl"]).port == api_settings.mqtt_ws_port
    assert 0 < body["expiresIn"] <= api_settings.mqtt_token_ttl_seconds

    claims = jwt.decode(
        body["token"],
        api_settings.jwt_secret,
        algorithms=["HS256"],
        audience=api_settings.mqtt_audience,
    )
    assert claims["sub"] == uid
    assert claims["aud"] == "plantnotify-mqtt"
    assert "role" not in claims  # never the service role
    assert claims["exp"] - claims["iat"] == body["expiresIn"]
    assert abs(claims["iat"] - time.time()) < 60


def test_realtime_token_names_the_login_session(
    client: TestClient, alice: User, api_settings: Settings
) -> None:
    """A session's MQTT token is revocable at the broker, so it may outlive the (short) access
    token; it carries the session id the broker revokes by."""
    r = client.post(REALTIME, headers=alice.headers)
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    access = jwt.decode(alice.token, options={"verify_signature": False})
    assert claims["sid"] == access["sid"]
    assert r.json()["expiresIn"] == api_settings.mqtt_token_ttl_seconds


def test_realtime_token_of_an_idp_token_does_not_outlive_it(
    make_settings: SettingsFactory,
) -> None:
    secret = "idp-secret-" + "i" * 40
    now = int(time.time())
    short = jwt.encode({"sub": "idp_user_1", "exp": now + 90, "iat": now}, secret, "HS256")
    with TestClient(create_app(make_settings(auth_jwt_secret=secret))) as idp_client:
        r = idp_client.post(REALTIME, headers={"Authorization": f"Bearer {short}"})
    assert r.status_code == 200
    assert r.json()["expiresIn"] <= 90
    assert "sid" not in jwt.decode(r.json()["token"], options={"verify_signature": False})


def test_realtime_token_requires_authentication(client: TestClient) -> None:
    assert client.post(REALTIME).status_code == 401


def test_the_credentials_open_our_broker_for_own_topics_only(
    client: TestClient, alice: User, bob: User
) -> None:
    grant = client.post(REALTIME, headers=alice.headers).json()
    c = mqtt.connect(
        grant["mqtt"]["port"],
        grant["username"],
        grant["token"],
        grant["clientIdPrefix"] + "pytest",
    )
    try:
        assert c.subscribe(grant["topics"]["analyses"])[0] < 0x80
        assert c.subscribe(topics.analyses_filter(bob.user_id))[0] >= 0x80
        assert c.publish(grant["topics"]["receipts"], b'{"eventId":"e1"}') < 0x80
    finally:
        c.close()
    # alice's token is not bob's: the broker refuses it under bob's name
    with pytest.raises(mqtt.ConnectRefused):
        mqtt.connect(grant["mqtt"]["port"], bob.user_id, grant["token"], bob.user_id)


def test_on_the_nats_engine_the_grant_says_mqtt_311_and_opens_the_cluster(
    make_settings: SettingsFactory, nats_cluster: NatsHandle, alice: User
) -> None:
    """The app reads ``mqtt.protocolVersion`` (NATS refuses MQTT 5) and needs nothing else."""
    cluster = nats_cluster.settings
    settings = make_settings(
        broker_engine="nats", mqtt_port=cluster.mqtt_port, mqtt_ws_port=cluster.mqtt_ws_port
    )
    with TestClient(create_app(settings)) as nats_client:
        grant = nats_client.post(REALTIME, headers=alice.headers).json()
    assert grant["mqtt"]["protocolVersion"] == mqtt.V311
    assert grant["mqtt"]["port"] == cluster.mqtt_port
    c = mqtt.connect(
        grant["mqtt"]["port"],
        grant["username"],
        grant["token"],
        grant["clientIdPrefix"] + "pytest",
        protocol=grant["mqtt"]["protocolVersion"],
    )
    try:
        assert c.subscribe(grant["topics"]["analyses"]) == [1]
        assert c.subscribe(topics.analyses_filter("someone-else")) == [0x80]
    finally:
        c.close()
