"""Revocation, the same on every engine (contract §2, issue 14): the API's feed publishes lines
on ``$CONTROL/plantnotify/revocations`` from a service connection; the engine refuses revoked
tokens at CONNECT and closes the user's live connections within 5 s, on any node. Lines from
a user connection change nothing.

Here a service client publishes the lines the feed would (``api/revocation_feed.py``); the
feed itself against each engine is tested in ``tests/api`` (Mosquitto) and
``tests/plantnotify/authcallout`` (NATS).
"""

from __future__ import annotations

import secrets
import time

from plantnotify.contracts.topics import BROKER_REVOCATIONS_TOPIC
from tests.contract.engines import EngineUnderTest
from tests.support.mqtt import ConnectRefused, TestClient

OUT_WITHIN = 5.0


def _user(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


def _revoke(engine: EngineUnderTest, *lines: str, node: int = 0) -> None:
    svc = engine.service(f"rev-{secrets.token_hex(2)}", node=node)
    try:
        svc.publish(BROKER_REVOCATIONS_TOPIC, ("\n".join(lines) + "\n").encode())
    finally:
        svc.close()


def _refused_soon(engine: EngineUnderTest, user: str, token: str, node: int) -> None:
    """CONNECTs with ``token`` are refused once the lines reached every node (< 5 s)."""
    deadline = time.monotonic() + OUT_WITHIN
    while True:
        try:
            c = engine.connect(user, f"{user}-again", node=node, token=token)
        except ConnectRefused:
            return
        c.close()
        assert time.monotonic() < deadline, f"revoked token still accepted on node {node}"
        time.sleep(0.2)


def _kicked(conn: TestClient, since: float) -> float:
    assert conn.disconnected.wait(OUT_WITHIN), "revoked connection still open after 5 s"
    return time.monotonic() - since


def test_a_revoked_session_is_closed_within_5s_and_refused_on_every_node(
    engine: EngineUnderTest,
) -> None:
    user = _user("rvs")
    sid = f"s{secrets.token_hex(4)}"
    revoked = engine.token(user, session_id=sid)
    other = engine.token(user, session_id=f"s{secrets.token_hex(4)}")
    phone = engine.connect(user, f"{user}-phone", node=1, token=revoked)
    laptop = engine.connect(user, f"{user}-laptop", node=2, token=other)
    try:
        t0 = time.monotonic()
        _revoke(engine, f"S {user} {sid} {int(time.time()) + 300}")
        assert _kicked(phone, t0) < OUT_WITHIN
        for node in range(engine.nodes):
            _refused_soon(engine, user, revoked, node)
        # the other login session is untouched: its token still opens every node (its live
        # connection may have been closed once, as the plugin closes all of a user's)
        laptop.close()
        for node in range(engine.nodes):
            engine.connect(user, f"{user}-laptop", node=node, token=other).close()
    finally:
        phone.close()
        laptop.close()


def test_log_out_everywhere_refuses_tokens_issued_before_and_accepts_new_ones(
    engine: EngineUnderTest,
) -> None:
    user = _user("rvu")
    now = int(time.time())
    old = engine.token(user, issued_at=now - 30)
    conns = [engine.connect(user, f"{user}-d{n}", node=n, token=old) for n in range(engine.nodes)]
    try:
        t0 = time.monotonic()
        _revoke(engine, f"U {user} {now - 10} {now + 300}", node=engine.nodes - 1)
        for c in conns:
            assert _kicked(c, t0) < OUT_WITHIN
        for node in range(engine.nodes):
            _refused_soon(engine, user, old, node)
        fresh = engine.token(user, issued_at=now - 10)  # issued at notBefore: a new login
        for node in range(engine.nodes):
            engine.connect(user, f"{user}-new", node=node, token=fresh).close()
    finally:
        for c in conns:
            c.close()


def test_revocation_lines_from_a_user_connection_change_nothing(engine: EngineUnderTest) -> None:
    attacker, victim = _user("rva"), _user("rvv")
    now = int(time.time())
    token = engine.token(victim, issued_at=now - 30)
    live = engine.connect(victim, f"{victim}-phone", node=1, token=token)
    evil = engine.connect(attacker, node=0)
    try:
        evil.publish(BROKER_REVOCATIONS_TOPIC, f"U {victim} {now} {now + 300}\n".encode())
        time.sleep(1.5)
        assert not live.disconnected.is_set(), "a user's line closed another user's connection"
        for node in range(engine.nodes):
            engine.connect(victim, f"{victim}-tab", node=node, token=token).close()
    finally:
        evil.close()
        live.close()
