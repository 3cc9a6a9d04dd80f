"""Plugin configuration on real brokers: refusing bad options, RS256/ES256 and issuer set-ups."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plantnotify.broker.process import BrokerStartError
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from plantnotify.settings import Settings
from tests.mosquitto.tokens import claims, hs256
from tests.support.broker import BrokerFactory, BrokerHandle
from tests.support.mqtt import raw_connect

# ----------------------------------------------------------------------------- refusing to start


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem_private(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


BAD_OPTIONS = [
    ("empty-secret-file", lambda d: {"jwt_secret_file": str(_write(d / "s", ""))}, "0 bytes"),
    (
        "short-secret-file",
        lambda d: {"jwt_secret_file": str(_write(d / "s", "x" * 31))},
        "31 bytes",
    ),
    ("short-secret", lambda d: {"jwt_secret_file": None, "jwt_secret": "short"}, "5 bytes"),
    # Mosquitto itself refuses an empty plugin_opt value before the plugin sees it.
    (
        "empty-secret",
        lambda d: {"jwt_secret_file": None, "jwt_secret": ""},
        "Empty jwt_secret value",
    ),
    (
        "missing-secret-file",
        lambda d: {"jwt_secret_file": str(d / "nope")},
        "cannot read jwt_secret_file",
    ),
    ("no-secret-at-all", lambda d: {"jwt_secret_file": None}, "needs plugin_opt_jwt_secret"),
    ("alg-none", lambda d: {"jwt_alg": "none"}, 'jwt_alg "none" is not supported'),
    (
        "rs256-missing-key-file",
        lambda d: {
            "jwt_alg": "RS256",
            "jwt_secret_file": None,
            "jwt_public_key_file": str(d / "nope.pem"),
        },
        "cannot read jwt_public_key_file",
    ),
    (
        "rs256-without-key",
        lambda d: {"jwt_alg": "RS256", "jwt_secret_file": None},
        "needs plugin_opt_jwt_public_key_file",
    ),
    (
        "rs256-private-key-given",
        lambda d: {
            "jwt_alg": "RS256",
            "jwt_secret_file": None,
            "jwt_public_key_file": str(
                _write(
                    d / "k.pem",
                    _pem_private(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                )
            ),
        },
        "not a PEM public key",
    ),
    ("leeway-too-big", lambda d: {"leeway": "600"}, "leeway"),
    ("limit-zero", lambda d: {"max_connections_per_user": "0"}, "max_connections_per_user"),
    (
        "typo-option",
        lambda d: {"max_conections_per_user": "3"},
        "unknown option plugin_opt_max_conections_per_user",
    ),
]


@pytest.mark.parametrize(
    "make_opts,message", [(b, c) for _, b, c in BAD_OPTIONS], ids=[a for a, _, _ in BAD_OPTIONS]
)
def test_broker_refuses_to_start_with_bad_plugin_options(
    broker_factory: BrokerFactory, tmp_path: Path, make_opts: object, message: str
) -> None:
    handle = broker_factory(plugin_options=make_opts(tmp_path), start=False)  # type: ignore[operator]
    with pytest.raises(BrokerStartError) as info:
        handle.start()
    assert message in info.value.log
    if not message.startswith("Empty"):
        assert "plantnotify: not loaded; the broker cannot start without it" in info.value.log
    assert not handle.running()


# ----------------------------------------------------------------------------- RS256 / ES256 / iss


def _accepted(broker: BrokerHandle, user: str, token: str, version: int = 4) -> bool:
    code, raw = raw_connect(broker.port, user, user, token, version=version)
    raw.close()
    return code == 0


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_asymmetric_configuration(
    broker_factory: BrokerFactory, base_settings: Settings, tmp_path: Path, alg: str
) -> None:
    make = (
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if alg == "RS256"
        else (lambda: ec.generate_private_key(ec.SECP256R1()))
    )
    key, other = make(), make()
    private = _write(tmp_path / "mqtt.key", _pem_private(key))
    public = _write(tmp_path / "mqtt.pub", _pem_public(key))
    b = broker_factory(
        mqtt_jwt_algorithm=alg, mqtt_jwt_private_key_file=private, mqtt_jwt_public_key_file=public
    )
    assert f"alg={alg}" in b.log_text()
    assert _accepted(b, "42", b.token("42"))
    assert _accepted(b, "42", b.token("42"), version=5)
    # Algorithm confusion: HS256 MACed with the public key PEM the broker verifies with.
    assert not _accepted(
        b, "42", hs256({"alg": "HS256", "typ": "JWT"}, claims(), public.read_bytes())
    )
    assert not _accepted(b, "42", hs256({"alg": "HS256"}, claims(), base_settings.jwt_secret))
    forged = MqttSigner(key=_pem_private(other), algorithm=alg)
    assert not _accepted(b, "42", mint_mqtt_token(forged, "42", 300))
    other_alg = "ES256" if alg == "RS256" else "RS256"
    other_key = (
        ec.generate_private_key(ec.SECP256R1())
        if other_alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    assert not _accepted(
        b,
        "42",
        mint_mqtt_token(MqttSigner(key=_pem_private(other_key), algorithm=other_alg), "42", 300),
    )
    log = b.log_text()
    assert "algorithm is not the configured one" in log
    assert "bad signature" in log


def test_issuer_is_checked_when_configured(broker_factory: BrokerFactory) -> None:
    b = broker_factory(mqtt_issuer="https://auth.plantnotify.test")
    secret = b.settings.jwt_secret
    assert _accepted(b, "42", b.token("42"))  # minted with the configured iss
    assert not _accepted(b, "42", hs256({"alg": "HS256"}, claims(), secret))
    assert not _accepted(b, "42", hs256({"alg": "HS256"}, claims(iss="https://evil.test"), secret))
    assert not _accepted(
        b, "42", hs256({"alg": "HS256"}, claims(iss=["https://auth.plantnotify.test"]), secret)
    )
    assert b.log_text().count("wrong issuer") == 3
