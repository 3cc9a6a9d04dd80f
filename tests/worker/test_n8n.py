"""The N8N client against a fake webhook over real HTTP: which answers are results, which
failures are retried, and what the readable messages say."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.fake_n8n import DEFAULT_RESULT, FakeN8n
from worker.n8n import Cancelled, N8nAnswer, N8nClient, N8nFailure, N8nRequest, interpret

AID = "a-n8n-test"


def request(analysis_id: str = AID) -> N8nRequest:
    return N8nRequest(
        analysis_id=analysis_id,
        user_id="u1",
        crop_type="tomato",
        mime_type="image/png",
        image=b"\x89PNG fake",
        image_url="/api/v1/plantanalyses/x/image",
    )


def client(fake: FakeN8n, *, timeout: float = 1.0, attempts: int = 3) -> N8nClient:
    return N8nClient(fake.url, timeout=timeout, max_attempts=attempts, backoff=0.05)


def test_a_json_object_is_the_result_and_the_request_carries_the_contract_fields(
    fake_n8n: FakeN8n,
) -> None:
    outcome = client(fake_n8n).analyse(request(), threading.Event())
    assert isinstance(outcome, N8nAnswer)
    assert outcome.result == DEFAULT_RESULT
    assert (outcome.crop_type, outcome.primary_concern, outcome.overall_health_score) == (
        "tomato",
        "Early blight (Alternaria solani)",
        72,
    )
    [call] = fake_n8n.calls_for(AID)
    assert set(call.body) == {
        "analysisId",
        "userId",
        "cropType",
        "mimeType",
        "imageBase64",
        "imageUrl",
    }
    assert call.body["imageBase64"] == "iVBORyBmYWtl"  # base64 of the bytes


@pytest.mark.parametrize(
    ("mode", "calls", "transient", "words"),
    [
        ("500", 3, True, "HTTP 500"),
        ("429", 3, True, "HTTP 429"),
        ("reset", 3, True, "Could not reach"),
        ("400", 1, False, "refused the image (HTTP 400)"),
        ("not_json", 1, False, "not JSON"),
        ("array", 1, False, "JSON array, not an object"),
    ],
)
def test_failures_are_retried_only_when_another_attempt_can_help(
    fake_n8n: FakeN8n, mode: str, calls: int, transient: bool, words: str
) -> None:
    fake_n8n.default = mode
    outcome = client(fake_n8n).analyse(request(), threading.Event())
    assert isinstance(outcome, N8nFailure)
    assert outcome.transient is transient
    assert words in outcome.message
    assert len(fake_n8n.calls_for(AID)) == calls == outcome.attempts
    assert fake_n8n.url not in outcome.message  # never the (possibly secret) URL


def test_503_then_200_completes_on_the_second_attempt(fake_n8n: FakeN8n) -> None:
    fake_n8n.plan(AID, "503")
    outcome = client(fake_n8n).analyse(request(), threading.Event())
    assert isinstance(outcome, N8nAnswer)
    assert outcome.attempts == 2


def test_a_hang_past_the_timeout_fails_after_every_attempt(fake_n8n: FakeN8n) -> None:
    fake_n8n.default = "hang"
    started = time.monotonic()
    outcome = client(fake_n8n, timeout=0.3, attempts=2).analyse(request(), threading.Event())
    assert isinstance(outcome, N8nFailure)
    assert outcome.message == "The analysis service did not answer within 0.3 s. (after 2 attempts)"
    assert 0.6 <= time.monotonic() - started < 3
    assert len(fake_n8n.calls_for(AID)) == 2


def test_back_off_grows_and_honours_retry_after(fake_n8n: FakeN8n) -> None:
    n8n = client(fake_n8n)
    failure = N8nFailure("x", True, "http_5xx")
    assert all(0.025 <= n8n.delay(1, failure) <= 0.075 for _ in range(50))
    assert all(0.1 <= n8n.delay(3, failure) <= 0.3 for _ in range(50))
    slow = N8nFailure("x", True, "http_5xx", retry_after=2.0)
    assert n8n.delay(1, slow) == 2.0


def test_shutdown_during_back_off_cancels_instead_of_failing(fake_n8n: FakeN8n) -> None:
    fake_n8n.default = "503"
    n8n = N8nClient(fake_n8n.url, timeout=1, max_attempts=5, backoff=5.0)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        n8n.analyse(request(), cancel)
    assert time.monotonic() - started < 2
    assert len(fake_n8n.calls_for(AID)) == 1


@pytest.mark.parametrize(
    ("score", "expected"),
    [(88, 88), (99.6, 100), (0, 0), (101, None), (-1, None), ("90", None), (True, None)],
)
def test_only_a_health_score_in_range_is_read(score: object, expected: int | None) -> None:
    answer = interpret({"overallHealthScore": score, "cropType": "  ", "primaryConcern": "x" * 500})
    assert answer.overall_health_score == expected
    assert answer.crop_type is None
    assert answer.primary_concern is not None and len(answer.primary_concern) == 200


def test_calls_keep_one_connection_alive_and_a_reset_one_is_not_reused(
    fake_n8n: FakeN8n,
) -> None:
    n8n = client(fake_n8n, attempts=1)
    direct = n8n._direct
    assert direct is not None  # no proxy in the test environment: http.client, not httpx
    assert isinstance(n8n.analyse(request("a1"), threading.Event()), N8nAnswer)
    [kept] = direct._idle
    assert isinstance(n8n.analyse(request("a2"), threading.Event()), N8nAnswer)
    assert direct._idle == [kept]  # the same connection served the second call
    fake_n8n.plan("a3", "reset")
    assert isinstance(n8n.analyse(request("a3"), threading.Event()), N8nFailure)
    assert direct._idle == []  # a failed connection is closed, not pooled
    assert isinstance(n8n.analyse(request("a4"), threading.Event()), N8nAnswer)
    n8n.close()


def test_a_proxied_webhook_goes_through_httpx(
    fake_n8n: FakeN8n, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    assert client(fake_n8n)._direct is None
