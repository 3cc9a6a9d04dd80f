from __future__ import annotations

import jwt
import pytest

from plantnotify.contracts import topics
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from plantnotify.contracts.events import (
    AnalysisCompleted,
    AnalysisFailed,
    AnalysisProgress,
    InvalidPayload,
    parse_event,
    parse_receipt,
)
from plantnotify.contracts.ids import is_valid_client_id, is_valid_user_id

SECRET = "x" * 32


@pytest.mark.parametrize("uid", ["42", "alice", "A_b-9", "u" * 64])
def test_valid_user_ids(uid: str) -> None:
    assert is_valid_user_id(uid)


@pytest.mark.parametrize("uid", ["", "a/b", "#", "+", "a b", "u" * 65, "é", "a\x00", "$SYS"])
def test_invalid_user_ids_are_refused_by_topic_builders(uid: str) -> None:
    assert not is_valid_user_id(uid)
    with pytest.raises(ValueError):
        topics.analysis_topic(uid, "a1")


def test_topics_round_trip() -> None:
    t = topics.analysis_topic("42", "abc")
    assert t == "users/42/analyses/abc"
    ref = topics.parse_topic(t)
    assert ref == topics.TopicRef("analysis", "42", "abc")
    assert topics.parse_topic(topics.receipts_topic("42")) == topics.TopicRef("receipts", "42")
    assert topics.parse_topic("users/4#/receipts") is None
    assert topics.parse_topic("users/42/other") is None


@pytest.mark.parametrize(
    ("cid", "ok"),
    [
        ("42", True),
        ("42-pixel7", True),
        ("42-", False),
        ("420", False),
        ("43-x", False),
        ("42-a/b", False),
        ("42-#", False),
        ("42-" + "x" * 65, False),
    ],
)
def test_client_ids(cid: str, ok: bool) -> None:
    assert is_valid_client_id("42", cid) is ok


def test_events_are_camel_case_and_small() -> None:
    ev = AnalysisCompleted(
        analysis_id="a" * 36,
        user_id="u" * 64,
        crop_type="tomato" * 10,
        primary_concern="x" * 200,
        overall_health_score=77,
        image_url="/api/v1/x" * 20,
    )
    wire = ev.to_wire()
    assert wire["deepLink"] == f"app://analysis/{'a' * 36}"
    assert wire["event"] == "AnalysisCompleted" and wire["status"] == "Completed"
    assert len(ev.to_json_bytes()) < 1024
    assert parse_event(ev.to_json_bytes()) == ev


def test_parse_event_rejects_foreign_payloads() -> None:
    for raw in [b"", b"[]", b"{}", b'{"event":"Nope"}', b"\xff", b"{" * 10000]:
        with pytest.raises(InvalidPayload):
            parse_event(raw)
    assert isinstance(
        parse_event(
            AnalysisFailed(analysis_id="a", user_id="u", error_message="e").to_json_bytes()
        ),
        AnalysisFailed,
    )
    with pytest.raises(InvalidPayload):
        parse_event(
            b'{"event":"AnalysisProgress","analysisId":"a","userId":"u","progress":101,"stage":"s"}'
        )
    ok = AnalysisProgress(analysis_id="a", user_id="u", progress=40, stage="analyzing")
    assert parse_event(ok.to_json_bytes()) == ok


def test_receipts() -> None:
    assert parse_receipt(b'{"eventId":"e1"}').event_id == "e1"
    for raw in [b"", b"null", b'{"eventId":5}', b'{"eventId":""}', b"x" * 1000, b"[1]"]:
        with pytest.raises(InvalidPayload):
            parse_receipt(raw)


def test_mint_token_claims() -> None:
    signer = MqttSigner(key=SECRET)
    tok = mint_mqtt_token(signer, "42", 60, service=True, now=1000)
    claims = jwt.decode(
        tok,
        SECRET,
        algorithms=["HS256"],
        audience="plantnotify-mqtt",
        options={"verify_exp": False},
    )
    assert claims == {
        "sub": "42",
        "iat": 1000,
        "exp": 1060,
        "aud": "plantnotify-mqtt",
        "role": "service",
    }
    with pytest.raises(ValueError):
        mint_mqtt_token(signer, "a/b", 60)
    with pytest.raises(ValueError):
        MqttSigner(key="short")
