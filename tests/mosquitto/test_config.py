"""Broker configuration: refusing bad plugin options, RS256/ES256/issuer set-ups, ports, files."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plantnotify.broker.config import BrokerLayout, render_config, write_config
from plantnotify.broker.process import BrokerError, BrokerStartError, choose_ports, free_port
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from plantnotify.settings import Settings
from tests.mosquitto.tokens import claims, hs256
from tests.support.broker import BrokerFactory, BrokerHandle, settings_with
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


# ----------------------------------------------------------------------------- files and ports


def test_config_keeps_the_secret_out_and_sets_what_the_plugin_needs(
    base_settings: Settings, tmp_path: Path
) -> None:
    layout = BrokerLayout(
        port=free_port(), ws_port=free_port(), data_dir=tmp_path / "d", plugin_path=Path("/x.so")
    )
    path = write_config(base_settings, layout)
    text = path.read_text()
    assert base_settings.jwt_secret not in text
    assert layout.secret_path.read_text() == base_settings.jwt_secret
    for p in (path, layout.secret_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    lines = set(text.splitlines())
    for required in (
        "per_listener_settings false",
        "allow_anonymous false",
        "persistence true",
        "autosave_on_changes false",
        "check_retain_source false",
        f"listener {layout.port} 127.0.0.1",
        f"listener {layout.ws_port} 127.0.0.1",
        "protocol websockets",
        f"plugin_opt_jwt_secret_file {layout.secret_path}",
        f"plugin_opt_max_connections_per_user {base_settings.mqtt_max_connections_per_user}",
    ):
        assert required in lines, required
    assert "$" not in text.replace("$SYS", ""), "unfilled template placeholder"


def test_config_refuses_line_breaks_in_values(base_settings: Settings, tmp_path: Path) -> None:
    s = settings_with(base_settings, mqtt_audience="aud\nallow_anonymous true")
    layout = BrokerLayout(port=1, ws_port=2, data_dir=tmp_path, plugin_path=Path("/x.so"))
    with pytest.raises(Exception, match="line break"):
        render_config(s, layout)


def test_a_taken_default_port_is_replaced_but_an_explicit_one_fails(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        defaults = Settings(environment="test", mqtt_data_dir=tmp_path)
        # Pretend the default is the taken port, as with a system Mosquitto on 1883.
        defaults.__dict__["mqtt_port"] = port
        choice = choose_ports(defaults)
        assert choice.port != port
        assert any(f"MQTT_PORT {port} is taken" in n for n in choice.notes)
        explicit = Settings(environment="test", mqtt_port=port, mqtt_data_dir=tmp_path)
        with pytest.raises(BrokerError, match=f"MQTT_PORT={port} is already in use"):
            choose_ports(explicit)
