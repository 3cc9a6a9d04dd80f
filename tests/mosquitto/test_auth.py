"""CONNECT-time attacks on the plugin (RFC 8725 corpus, identities, take-over, limits).

Raw packets, so the exact CONNACK code is checked: 3.1.1 return code 5 (not authorized),
MQTT 5 reason 0x87. Each refusal is also matched to the plugin's log line naming the rule
that fired, so a token is refused for the right reason, not by accident.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from plantnotify.contracts.topics import analysis_topic, user_filter
from tests.mosquitto.tokens import AUD, claims, hs256, unsigned
from tests.support.broker import BrokerHandle
from tests.support.mqtt import V5, V311, ConnectRefused, connect, raw_connect

REFUSED = {4: {5}, 5: {0x87}}  # 3.1.1 "not authorized", MQTT 5 "Not authorized"
HS = {"alg": "HS256", "typ": "JWT"}

_RSA_PUBLIC_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
)


@dataclass(frozen=True)
class Attack:
    name: str
    make: Callable[[str], bytes | str | None]  # secret -> password
    reason: str | tuple[str, ...]  # substring(s) of the plugin's refusal log line
    username: bytes | str = "42"
    client_id: bytes | str = "42-attack"


def _pad(n: int) -> str:
    return "x" * n


ATTACKS = [
    # --- RFC 8725 §2.1 / §3.1: algorithm pinning ---
    Attack("alg-none", lambda s: unsigned({"alg": "none"}, claims()), "malformed"),
    Attack("alg-None", lambda s: unsigned({"alg": "None"}, claims()), "malformed"),
    Attack("alg-NONE", lambda s: unsigned({"alg": "NONE"}, claims()), "malformed"),
    Attack("alg-nOnE", lambda s: unsigned({"alg": "nOnE"}, claims()), "malformed"),
    Attack(
        "alg-none-with-signature",
        lambda s: hs256({"alg": "none"}, claims(), s),
        "algorithm is not the configured one",
    ),
    Attack("alg-HS512", lambda s: hs256({"alg": "HS512"}, claims(), s), "algorithm"),
    Attack("alg-lowercase", lambda s: hs256({"alg": "hs256"}, claims(), s), "algorithm"),
    Attack("alg-missing", lambda s: hs256({"typ": "JWT"}, claims(), s), "algorithm"),
    Attack(
        "hs256-signed-with-rsa-public-pem",
        lambda s: hs256(HS, claims(), _RSA_PUBLIC_PEM),
        "bad signature",
    ),
    Attack("wrong-secret", lambda s: hs256(HS, claims(), s + "x"), "bad signature"),
    Attack(
        "tampered-claims",
        lambda s: (
            lambda good, evil: (
                good.split(".")[0] + "." + evil.split(".")[1] + "." + good.split(".")[2]
            )
        )(hs256(HS, claims(), s), hs256(HS, claims(ttl=10**6), s)),
        "bad signature",
    ),
    # Cutting base64url may leave non-canonical trailing bits: malformed or bad signature.
    Attack("truncated", lambda s: hs256(HS, claims(), s)[:-5], ("bad signature", "malformed")),
    # --- RFC 7519 time claims ---
    Attack("expired-beyond-leeway", lambda s: hs256(HS, claims(ttl=-60), s), "token expired"),
    Attack(
        "nbf-in-future",
        lambda s: hs256(HS, claims(nbf=int(time.time()) + 600), s),
        "nbf in the future",
    ),
    Attack(
        "iat-in-future",
        lambda s: hs256(HS, claims(iat=int(time.time()) + 600), s),
        "iat in the future",
    ),
    Attack("missing-exp", lambda s: hs256(HS, claims(exp=None), s), "exp missing"),
    Attack(
        "exp-as-string",
        lambda s: hs256(HS, claims(exp=str(int(time.time()) + 300)), s),
        "exp missing",
    ),
    # --- RFC 8725 §3.9 audience, §2.8 cross-JWT confusion ---
    Attack("wrong-aud", lambda s: hs256(HS, claims(aud="plantnotify-api"), s), "wrong audience"),
    Attack("missing-aud", lambda s: hs256(HS, claims(aud=None), s), "wrong audience"),
    Attack("role-admin", lambda s: hs256(HS, claims(role="admin"), s), "unknown role"),
    # --- RFC 8725 §2.9 / §3.10: kid and key-fetching headers ---
    Attack(
        "kid-path-injection-empty-key",
        lambda s: hs256({"alg": "HS256", "kid": "../../../../dev/null"}, claims(), b""),
        "bad signature",
    ),
    Attack(
        "kid-sql-injection",
        lambda s: hs256({"alg": "HS256", "kid": "x' UNION SELECT 'key"}, claims(), "key"),
        "bad signature",
    ),
    Attack(
        "jku-header",
        lambda s: hs256({"alg": "HS256", "jku": "http://169.254.169.254/keys"}, claims(), s),
        "refused header",
    ),
    Attack(
        "crit-header",
        lambda s: hs256({"alg": "HS256", "crit": ["x"], "x": 1}, claims(), s),
        "refused header",
    ),
    Attack(
        "typ-at+jwt",
        lambda s: hs256({"alg": "HS256", "typ": "at+jwt"}, claims(), s),
        "refused header",
    ),
    # --- duplicate claims: libjwt keeps the last one ---
    Attack(
        "duplicate-sub",
        lambda s: hs256(
            HS,
            f'{{"sub":"42","sub":"43","exp":{int(time.time()) + 300},"aud":"{AUD}"}}',
            s,
        ),
        "duplicate JSON key",
    ),
    # --- topic injection through sub (signed correctly: only the sub rule can refuse) ---
    Attack("sub-plus", lambda s: hs256(HS, claims(sub="+"), s), "not a valid user id", "+", "+"),
    Attack("sub-hash", lambda s: hs256(HS, claims(sub="#"), s), "not a valid user id", "#", "#"),
    Attack(
        "sub-slash",
        lambda s: hs256(HS, claims(sub="42/x"), s),
        "not a valid user id",
        "42/x",
        "42/x",
    ),
    Attack(
        "sub-dollar",
        lambda s: hs256(HS, claims(sub="$SYS"), s),
        "not a valid user id",
        "$SYS",
        "$SYS",
    ),
    Attack("sub-nul", lambda s: hs256(HS, claims(sub="42\x00x"), s), "malformed"),
    Attack(
        "sub-65-chars",
        lambda s: hs256(HS, claims(sub="a" * 65), s),
        "not a valid user id",
        "a" * 65,
        "a" * 65,
    ),
    Attack(
        "sub-wildcard-with-valid-username",
        lambda s: hs256(HS, claims(sub="+"), s),
        "not a valid user id",
    ),
    # --- size and encoding ---
    Attack(
        "over-max-size",
        lambda s: hs256(HS, claims(pad=_pad(5000)), s),
        "larger than max_token_bytes",
    ),
    Attack(
        "60k-token", lambda s: hs256(HS, claims(pad=_pad(44000)), s), "larger than max_token_bytes"
    ),
    Attack("bad-base64", lambda s: "e30!.e30.AAAA", "malformed"),
    Attack("two-segments", lambda s: ".".join(hs256(HS, claims(), s).split(".")[:2]), "malformed"),
    Attack("four-segments", lambda s: hs256(HS, claims(), s) + ".AAAA", "malformed"),
    Attack("base64-padding", lambda s: hs256(HS, claims(), s) + "=", "malformed"),
    Attack("empty-password", lambda s: "", "empty token"),
    Attack("no-password", lambda s: None, "empty token"),
    # --- identity ---
    Attack("username-not-sub", lambda s: hs256(HS, claims(sub="43"), s), "differs from sub"),
    Attack(
        "username-is-token-prefix",
        lambda s: hs256(HS, claims(), s),
        "differs from sub",
        "eyJhbGciOi",
        "eyJhbGciOi",
    ),
    Attack(
        "client-id-of-other-user", lambda s: hs256(HS, claims(), s), "client id", "42", "43-phone"
    ),
    Attack(
        "client-id-prefix-without-dash", lambda s: hs256(HS, claims(), s), "client id", "42", "420"
    ),
    Attack("client-id-with-slash", lambda s: hs256(HS, claims(), s), "client id", "42", "42-a/b"),
    Attack("client-id-with-plus", lambda s: hs256(HS, claims(), s), "client id", "42", "42-+"),
    Attack("client-id-with-hash", lambda s: hs256(HS, claims(), s), "client id", "42", "42-#"),
]


def _refusal_lines(broker: BrokerHandle, since: int) -> list[str]:
    return [line for line in broker.log_text()[since:].splitlines() if "refused CONNECT" in line]


@pytest.mark.parametrize("version", [4, 5], ids=["mqtt311", "mqtt5"])
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_token_is_refused_at_connect(
    broker: BrokerHandle, attack: Attack, version: int
) -> None:
    mark = len(broker.log_text())
    password = attack.make(broker.settings.jwt_secret)
    code, raw = raw_connect(
        broker.port, attack.client_id, attack.username, password, version=version
    )
    try:
        assert code in REFUSED[version], f"{attack.name}: CONNACK {code!r}"
        assert raw.closed(), "the broker must close a refused connection"
    finally:
        raw.close()
    lines = _refusal_lines(broker, mark)
    assert lines, "the plugin logged no refusal"
    reasons = (attack.reason,) if isinstance(attack.reason, str) else attack.reason
    assert any(r in lines[-1] for r in reasons), lines[-1]
    # Tokens never reach the log.
    if password:
        assert str(password)[:40] not in broker.log_text()[mark:]


@pytest.mark.parametrize("version", [4, 5], ids=["mqtt311", "mqtt5"])
def test_positive_controls_are_accepted(broker: BrokerHandle, version: int) -> None:
    secret = broker.settings.jwt_secret
    good = [
        ("42", "42", broker.token("42")),
        ("42", "42-pixel7", broker.token("42")),
        ("42", "42-a.b:c_d-e", hs256(HS, claims(), secret)),
        ("42", "42-kid", hs256({"alg": "HS256", "kid": "k1"}, claims(), secret)),
        ("42", "42-aud", hs256(HS, claims(aud=["other", AUD]), secret)),
        ("42", "42-leeway", hs256(HS, claims(ttl=-2), secret)),  # within the 5 s leeway
        ("a" * 64, "a" * 64 + "-x", hs256(HS, claims(sub="a" * 64), secret)),
        ("svc-control", "svc-control", broker.token("svc-control", service=True)),
    ]
    for username, client_id, token in good:
        code, raw = raw_connect(broker.port, client_id, username, token, version=version)
        raw.close()
        assert code == 0, f"{username}/{client_id}: CONNACK {code}"


def test_malformed_utf8_username_is_refused_before_the_plugin(broker: BrokerHandle) -> None:
    for username in (b"42\x00", b"\xff\xfe", b"4\xc0\xaf2"):
        code, raw = raw_connect(broker.port, "42", username, broker.token("42"))
        raw.close()
        assert code is None or code != 0


def test_empty_client_id_is_refused(broker: BrokerHandle) -> None:
    for version in (4, 5):
        code, raw = raw_connect(broker.port, "", "42", broker.token("42"), version=version)
        raw.close()
        assert code not in (0, None) or code is None
        assert code != 0


def test_takeover_of_another_users_persistent_session_is_refused(broker: BrokerHandle) -> None:
    victim, mallory = "victim1", "mallory1"
    cid = f"{victim}-phone"
    tc = connect(broker.port, victim, broker.token(victim), cid, protocol=V311, clean=False)
    assert tc.subscribe(user_filter(victim)) == [1]
    tc.close()  # offline now; the session (and its subscription) stays

    # Mallory, with a perfectly valid token of her own, tries to become the victim's client.
    for username, token in ((mallory, broker.token(mallory)), (victim, broker.token(mallory))):
        for version in (V311, V5):
            with pytest.raises(ConnectRefused):
                connect(broker.port, username, token, cid, protocol=version, clean=False)

    # The session is intact: a QoS 1 event published while offline is waiting for the victim.
    svc = connect(
        broker.port, "svc-takeover", broker.token("svc-takeover", service=True), "svc-takeover"
    )
    svc.publish(analysis_topic(victim, "queued"), b'{"queued":true}', qos=1)
    svc.close()
    back = connect(broker.port, victim, broker.token(victim), cid, protocol=V311, clean=False)
    try:
        msg = back.wait_message(5)
        assert (msg.topic, msg.payload) == (analysis_topic(victim, "queued"), b'{"queued":true}')
    finally:
        back.close()


def test_connection_limit_and_same_client_id_takeover(broker: BrokerHandle) -> None:
    user = "limit1"
    limit = broker.settings.mqtt_max_connections_per_user
    clients = [connect(broker.port, user, broker.token(user), f"{user}-{i}") for i in range(limit)]
    try:
        with pytest.raises(ConnectRefused):
            connect(broker.port, user, broker.token(user), f"{user}-extra")
        # A phone reconnecting with its client id while the old connection is half-open.
        replacement = connect(broker.port, user, broker.token(user), f"{user}-0")
        assert clients[0].disconnected.wait(3), "the old connection must be taken over"
        clients[0] = replacement
        with pytest.raises(ConnectRefused):
            connect(broker.port, user, broker.token(user), f"{user}-extra")
        # A slot frees up when a connection ends.
        clients.pop().close()
        time.sleep(0.2)
        clients.append(connect(broker.port, user, broker.token(user), f"{user}-extra"))
    finally:
        for c in clients:
            c.close()


def test_connection_limit_does_not_apply_to_services(broker: BrokerHandle) -> None:
    user = "svc-many"
    limit = broker.settings.mqtt_max_connections_per_user
    clients = [
        connect(broker.port, user, broker.token(user, service=True), f"{user}-{i}")
        for i in range(limit + 2)
    ]
    for c in clients:
        c.close()


def test_overlapping_user_ids_cannot_take_over_a_live_client_id(broker: BrokerHandle) -> None:
    """'ovl-x' is a client id of user 'ovl' and the bare id of user 'ovl-x'."""
    owner = connect(broker.port, "ovl", broker.token("ovl"), "ovl-x")
    try:
        with pytest.raises(ConnectRefused):
            connect(broker.port, "ovl-x", broker.token("ovl-x"), "ovl-x")
        assert not owner.disconnected.is_set()
        assert "client id is live for another user" in broker.log_text()
    finally:
        owner.close()
