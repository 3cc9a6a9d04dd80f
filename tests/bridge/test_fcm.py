"""The real firebase-admin code path against the emulator: payload, error mapping, retries."""

from __future__ import annotations

import secrets
import time

import pytest
import requests
from firebase_admin import exceptions, messaging
from google.auth.exceptions import RefreshError

from bridge.credentials import FcmTarget, ephemeral_service_account
from bridge.fcm import FcmSender, SendResult, build_message, classify, push_body
from bridge.retry import Outcome
from devtools.fcm_emulator import FcmEmulator
from plantnotify.contracts.events import AnalysisCompleted, AnalysisFailed


@pytest.fixture(scope="module")
def sender(fcm_emulator: FcmEmulator) -> FcmSender:
    sa = ephemeral_service_account(fcm_emulator.token_uri, "fcm-tests")
    return FcmSender(FcmTarget(sa, fcm_emulator.url, ephemeral=True), timeout=5)


def completed(**kw: object) -> AnalysisCompleted:
    base: dict[str, object] = {
        "analysis_id": "an-" + secrets.token_hex(4),
        "user_id": "u1",
        "image_url": "/api/v1/plantanalyses/x/image",
        "crop_type": "Tomato",
        "overall_health_score": 72,
        "primary_concern": "Early blight",
    }
    base.update(kw)
    return AnalysisCompleted(**base)  # type: ignore[arg-type]


def tok(prefix: str = "ok-") -> str:
    return prefix + secrets.token_hex(6)


def test_completed_payload_on_the_wire(sender: FcmSender, fcm_emulator: FcmEmulator) -> None:
    event = completed()
    token = tok()
    result = sender.send(
        build_message(event, token, ttl_seconds=3600, web_base_url="https://plants.example")
    )
    assert result.outcome is Outcome.SENT and result.http_status == 200
    (got,) = fcm_emulator.deliveries(token)
    msg = got["message"]
    assert msg["token"] == token
    assert msg["notification"] == {
        "title": "Analysis complete",
        "body": "Tomato: health score 72/100 · Early blight",
    }
    assert msg["data"] == {
        "event": "AnalysisCompleted",
        "eventId": event.event_id,
        "analysisId": event.analysis_id,
        "deepLink": f"app://analysis/{event.analysis_id}",
    }
    assert all(isinstance(v, str) for v in msg["data"].values())
    android = msg["android"]
    assert android["priority"] == "high" and android["ttl"] == "3600s"
    assert android["collapse_key"] == event.analysis_id
    assert android["notification"]["tag"] == event.analysis_id
    headers = msg["apns"]["headers"]
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == event.analysis_id
    assert int(headers["apns-expiration"]) > time.time()
    assert msg["webpush"]["fcm_options"]["link"] == (
        f"https://plants.example/#/analyses/{event.analysis_id}"
    )
    assert got["headers"]["x-firebase-client"].startswith("fire-admin-python/")


def test_failed_payload_names_the_reason(sender: FcmSender, fcm_emulator: FcmEmulator) -> None:
    event = AnalysisFailed(analysis_id="an-f", user_id="u1", error_message="image unreadable")
    token = tok()
    assert sender.send(build_message(event, token, ttl_seconds=60)).outcome is Outcome.SENT
    (got,) = fcm_emulator.deliveries(token)
    assert got["message"]["notification"]["title"] == "Analysis failed"
    assert "image unreadable" in got["message"]["notification"]["body"]
    assert got["message"]["data"]["event"] == "AnalysisFailed"
    # No https public URL configured: no web push link (FCM refuses http links).
    assert "fcm_options" not in got["message"]["webpush"]


def test_push_body_without_crop_or_score() -> None:
    title, body = push_body(
        completed(crop_type=None, overall_health_score=None, primary_concern=None)
    )
    assert (title, body) == ("Analysis complete", "Your plant: result ready")


@pytest.mark.parametrize(
    ("prefix", "outcome", "status", "code"),
    [
        ("dead-", Outcome.DEVICE_GONE, 404, "UNREGISTERED"),
        ("bad-", Outcome.DEVICE_GONE, 400, "INVALID_ARGUMENT"),
        ("exhaust-", Outcome.RETRY, 429, "QUOTA_EXCEEDED"),
        ("down-", Outcome.RETRY, 503, "UNAVAILABLE"),
        ("internal-", Outcome.RETRY, 500, "INTERNAL"),
        ("mismatch-", Outcome.FAILED, 403, "SENDER_ID_MISMATCH"),
    ],
)
def test_error_mapping_one_http_attempt_each(
    sender: FcmSender,
    fcm_emulator: FcmEmulator,
    prefix: str,
    outcome: Outcome,
    status: int,
    code: str,
) -> None:
    token = tok(prefix)
    result = sender.send(build_message(completed(), token, ttl_seconds=60))
    assert (result.outcome, result.http_status, result.error_code) == (outcome, status, code)
    # The SDK's own urllib3 retries are off: exactly one request, no hidden back-off sleeps.
    assert len(fcm_emulator.attempts(token)) == 1
    assert fcm_emulator.deliveries(token) == []
    if prefix == "exhaust-":
        assert result.retry_after == 1.0


def test_payload_error_is_not_blamed_on_the_device(
    sender: FcmSender, fcm_emulator: FcmEmulator
) -> None:
    # A data value that is not a string is caught by the SDK before any HTTP call...
    with pytest.warns(DeprecationWarning):
        bad = messaging.Message(token=tok(), data={"n": 1})  # type: ignore[dict-item]
    assert sender.send(bad).outcome is Outcome.FAILED
    # ...and an oversized payload is refused by the server with a BadRequest detail.
    big = build_message(completed(primary_concern="x" * 150), tok(), ttl_seconds=60)
    big.data = {**(big.data or {}), "pad": "y" * 5000}
    result = sender.send(big)
    assert (result.outcome, result.http_status) == (Outcome.FAILED, 400)


def test_oauth_failure_is_a_configuration_error(fcm_emulator: FcmEmulator) -> None:
    sa = ephemeral_service_account(
        fcm_emulator.token_uri,
        "revoked-proj",
        client_email="revoked-bridge@x.iam.gserviceaccount.com",
    )
    bad = FcmSender(FcmTarget(sa, fcm_emulator.url, ephemeral=True), timeout=5)
    token = tok()
    result = bad.send(build_message(completed(), token, ttl_seconds=60))
    assert result.outcome is Outcome.CONFIG and result.error_code == "OAUTH_REFRESH"
    assert "invalid_grant" in result.detail
    assert fcm_emulator.attempts(token) == []  # never reached FCM


def test_unreachable_endpoint_is_retryable() -> None:
    sa = ephemeral_service_account("http://127.0.0.1:9/token", "nowhere")
    s = FcmSender(FcmTarget(sa, "http://127.0.0.1:9", ephemeral=True), timeout=2)
    result = s.send(build_message(completed(), tok(), ttl_seconds=60))
    assert result.outcome is Outcome.RETRY, result


def test_token_is_fetched_once_and_reused(fcm_emulator: FcmEmulator) -> None:
    sa = ephemeral_service_account(fcm_emulator.token_uri, "reuse-proj", client_email="reuse@x.y")
    s = FcmSender(FcmTarget(sa, fcm_emulator.url, ephemeral=True), timeout=5)
    before = fcm_emulator.token_requests
    for _ in range(3):
        assert s.send(build_message(completed(), tok(), ttl_seconds=60)).outcome is Outcome.SENT
    assert fcm_emulator.token_requests - before == 1


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (RefreshError("invalid_grant"), Outcome.CONFIG),
        (requests.ConnectionError("refused"), Outcome.RETRY),
        (exceptions.UnauthenticatedError("401"), Outcome.CONFIG),
        (exceptions.PermissionDeniedError("403"), Outcome.CONFIG),
        (exceptions.DeadlineExceededError("timeout"), Outcome.RETRY),
        (exceptions.UnknownError("502 html"), Outcome.RETRY),
        (exceptions.NotFoundError("wrong project"), Outcome.CONFIG),
        (exceptions.InvalidArgumentError("payload"), Outcome.FAILED),
        (ValueError("bad message"), Outcome.FAILED),
        (RuntimeError("bug"), Outcome.FAILED),
    ],
)
def test_classify_without_http(exc: BaseException, outcome: Outcome) -> None:
    result = classify(exc)
    assert isinstance(result, SendResult) and result.outcome is outcome
