"""Finding 8 of issue 14: MQTT tokens signed with a key pair, the broker holding only the public
key. `plantnotify keygen` writes the pair; a broker given the public key accepts ES256 tokens
and refuses HS256 tokens whatever they are MACed with; the broker's own health check and metrics
work without a signing key."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plantnotify.broker.metrics import BrokerMetrics
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from plantnotify.healthcheck import Unhealthy, check
from plantnotify.settings import Settings
from tests.mosquitto.tokens import claims, hs256
from tests.support.broker import BrokerFactory, BrokerHandle
from tests.support.mqtt import raw_connect
from tests.support.net import free_port


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plantnotify.cli", "keygen", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keygen_writes_a_pair_and_keeps_an_existing_one(tmp_path: Path) -> None:
    result = keygen(str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    private, public = tmp_path / "keys" / "mqtt.key", tmp_path / "keys" / "mqtt.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    # Both files are PEM keys of one pair (generated here, at test time; none is committed).
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert serialization.load_pem_public_key(public.read_bytes()) == key.public_key()
    assert "MQTT_JWT_PUBLIC_KEY_FILE=" in result.stdout
    before = private.read_bytes()
    again = keygen(str(tmp_path / "keys"))
    assert again.returncode == 1 and "--force" in again.stderr
    assert private.read_bytes() == before
    assert keygen(str(tmp_path / "keys"), "--force", "--algorithm", "RS256").returncode == 0
    assert private.read_bytes() != before


def _accepted(broker: BrokerHandle, token: str, version: int = 4) -> bool:
    code, raw = raw_connect(broker.port, "42", "42", token, version=version)
    raw.close()
    return code == 0


@pytest.fixture
def public_key_broker(broker_factory: BrokerFactory, tmp_path: Path) -> tuple[BrokerHandle, Path]:
    assert keygen(str(tmp_path / "keys")).returncode == 0
    broker = broker_factory(
        mqtt_jwt_algorithm="ES256",
        mqtt_jwt_public_key_file=tmp_path / "keys" / "mqtt.pub",
        mqtt_jwt_private_key_file=None,
    )
    return broker, tmp_path / "keys"


def test_a_public_key_broker_accepts_es256_and_refuses_hs256_signed_with_anything(
    public_key_broker: tuple[BrokerHandle, Path], base_settings: Settings
) -> None:
    broker, keys = public_key_broker
    assert "alg=ES256" in broker.log_text()
    assert not broker.settings.can_mint_mqtt_tokens
    # Nothing that can mint a token is in the broker's files.
    assert not (broker.data_dir / "jwt_secret").exists()
    assert base_settings.jwt_secret not in (broker.data_dir / "mosquitto.conf").read_text()

    signer = MqttSigner(key=(keys / "mqtt.key").read_bytes(), algorithm="ES256")
    assert _accepted(broker, mint_mqtt_token(signer, "42", 300))
    assert _accepted(broker, mint_mqtt_token(signer, "42", 300), version=5)

    public_pem = (keys / "mqtt.pub").read_bytes()
    public_der = serialization.load_pem_public_key(public_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    candidates = {
        "JWT_SECRET": base_settings.jwt_secret.encode(),
        "the public key PEM (algorithm confusion)": public_pem,
        "the public key PEM, trimmed": public_pem.strip(),
        "the public key DER": public_der,
        "the private key PEM": (keys / "mqtt.key").read_bytes(),
        "a random secret": secrets.token_bytes(32),
        "an empty key": b"",
    }
    for what, key in candidates.items():
        for header in ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256"}):
            token = hs256(header, claims(), key)
            assert not _accepted(broker, token), f"HS256 with {what} was accepted"
            assert not _accepted(broker, token, version=5), f"HS256 with {what} (MQTT 5)"
    assert "algorithm is not the configured one" in broker.log_text()


def test_health_check_and_metrics_of_a_broker_without_a_signing_key(
    public_key_broker: tuple[BrokerHandle, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker, keys = public_key_broker
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("MQTT_JWT_ALGORITHM", "ES256")
    monkeypatch.setenv("MQTT_JWT_PUBLIC_KEY_FILE", str(keys / "mqtt.pub"))
    assert "answers MQTT" in check(f"mqtt://127.0.0.1:{broker.port}")
    with pytest.raises(Unhealthy):
        check(f"mqtt://127.0.0.1:{free_port()}", timeout=1.0)
    # The probe is not a CONNECT the plugin decides: it is answered before authentication.
    assert "refused CONNECT" not in broker.log_text()

    metrics = BrokerMetrics(broker.settings, "127.0.0.1", broker.port)
    metrics.start(0, "127.0.0.1")
    try:
        up = {m.name: m.samples[0].value for m in metrics.collect() if m.samples}
        assert up["plantnotify_broker_up"] == 1.0
    finally:
        metrics.stop()
    broker.stop()
    up = {m.name: m.samples[0].value for m in metrics.collect() if m.samples}
    assert up["plantnotify_broker_up"] == 0.0


def _broker_metrics_once(broker: BrokerHandle, keys: Path, private: bool) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    env.update(
        MQTT_HOST="127.0.0.1",
        MQTT_PORT=str(broker.port),
        MQTT_JWT_ALGORITHM="ES256",
        MQTT_JWT_PUBLIC_KEY_FILE=str(keys / "mqtt.pub"),
    )
    if private:
        env["MQTT_JWT_PRIVATE_KEY_FILE"] = str(keys / "mqtt.key")
    result = subprocess.run(
        [sys.executable, "-m", "plantnotify.cli", "broker-metrics", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return result.returncode, result.stdout, result.stderr


_SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def test_broker_metrics_beside_a_public_key_broker_counts_its_connects(
    public_key_broker: tuple[BrokerHandle, Path],
) -> None:
    """Where the broker holds only the public key, `plantnotify broker-metrics` runs where the
    signing key is and still exports the plugin's CONNECT outcomes (issue 16's success rate)."""
    broker, keys = public_key_broker
    code, _, err = _broker_metrics_once(broker, keys, private=False)
    assert code == 2 and "MQTT_JWT_PRIVATE_KEY_FILE" in err

    signer = MqttSigner(key=(keys / "mqtt.key").read_bytes(), algorithm="ES256")
    assert _accepted(broker, mint_mqtt_token(signer, "42", 300))
    assert not _accepted(broker, hs256({"alg": "HS256"}, claims(), b"guess"))
    deadline = time.monotonic() + 30
    while True:
        code, out, err = _broker_metrics_once(broker, keys, private=True)
        assert code == 0, err
        counts = json.loads(out)["connects"]
        # The exporter's own service connection is accepted too.
        if counts["accepted"] >= 2 and counts["invalid_token"] >= 1:
            break
        assert time.monotonic() < deadline, counts
        time.sleep(1)
