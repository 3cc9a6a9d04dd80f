"""The auth callout applies the plugin's token rules: the plugin's own attack corpus is refused
by the callout too (both engines refuse the same tokens), and good tokens pass."""

from __future__ import annotations

import time

import pytest

from plantnotify.authcallout.rules import Refused, TokenConfig, check_connect, client_id_allowed
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from tests.mosquitto.test_auth import ATTACKS, Attack

SECRET = "callout-rules-secret-0123456789abcdef"
CFG = TokenConfig(SECRET, "HS256", "plantnotify-mqtt", None, leeway=5)


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_every_plugin_attack_is_refused_by_the_callout(attack: Attack) -> None:
    with pytest.raises(Refused):
        check_connect(
            CFG,
            _as_text(attack.username),
            _as_text(attack.client_id),
            _as_text(attack.make(SECRET)),
        )


def test_a_good_token_passes_with_the_plugins_client_id_rule() -> None:
    signer = MqttSigner(SECRET)
    token = mint_mqtt_token(signer, "42", 60)
    ok = check_connect(CFG, "42", "42-pixel7", token)
    assert (ok.sub, ok.service) == ("42", False)
    assert abs(ok.expires - (time.time() + 60)) < 3
    svc = check_connect(CFG, "svc-w", "svc-w-1", mint_mqtt_token(signer, "svc-w", 60, service=True))
    assert svc.service


@pytest.mark.parametrize(
    ("client_id", "allowed"),
    [
        ("42", True),
        ("42-a", True),
        ("42-a.b:c_d-e", True),
        ("42-", False),
        ("420", False),
        ("4", False),
        ("43-a", False),
        ("42-a/b", False),
        ("42-" + "x" * 65, False),
    ],
)
def test_client_id_rule(client_id: str, allowed: bool) -> None:
    assert client_id_allowed("42", client_id) is allowed


def test_leeway_applies_to_expiry() -> None:
    signer = MqttSigner(SECRET)
    now = int(time.time())
    just_expired = mint_mqtt_token(signer, "42", 1, now=now - 3)
    check_connect(CFG, "42", "42", just_expired)  # within the 5 s leeway
    long_expired = mint_mqtt_token(signer, "42", 1, now=now - 30)
    with pytest.raises(Refused) as refused:
        check_connect(CFG, "42", "42", long_expired)
    assert refused.value.outcome == "expired"
