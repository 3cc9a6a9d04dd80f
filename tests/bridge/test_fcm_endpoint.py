"""The version-pinned override of firebase-admin's private FCM URL (bridge/fcm_endpoint.py).

If a firebase-admin upgrade renames ``_MessagingService._fcm_url`` or its HTTP session, these
tests fail instead of the bridge silently sending to Google (or nowhere).
"""

from __future__ import annotations

import firebase_admin
import pytest
from firebase_admin import messaging

from bridge import fcm_endpoint
from bridge.credentials import FcmTarget, ephemeral_service_account
from bridge.fcm import FcmSender, build_message
from devtools.fcm_emulator import FcmEmulator
from plantnotify.contracts.events import AnalysisCompleted


def test_pinned_version_is_the_installed_one() -> None:
    assert firebase_admin.__version__ == fcm_endpoint.PINNED_FIREBASE_ADMIN


def test_private_attributes_exist_on_the_messaging_service() -> None:
    assert "{0}" in messaging._MessagingService.FCM_URL
    assert messaging._MessagingService.FCM_URL.startswith(fcm_endpoint.GOOGLE_FCM_BASE)
    sa = ephemeral_service_account("http://127.0.0.1:9/token", "attr-check")
    app = firebase_admin.initialize_app(
        firebase_admin.credentials.Certificate(sa), {"projectId": "attr-check"}, name="attr-check"
    )
    try:
        svc = messaging._get_messaging_service(app)
        assert svc._fcm_url == "https://fcm.googleapis.com/v1/projects/attr-check/messages:send"
        assert hasattr(svc._client, "session")
        url = fcm_endpoint.configure(app, "http://127.0.0.1:1234/")
        assert url == "http://127.0.0.1:1234/v1/projects/attr-check/messages:send"
        assert messaging._get_messaging_service(app)._fcm_url == url  # cached per app
        # Our adapter wins for the endpoint: one attempt, no status retries.
        adapter = svc._client.session.get_adapter(url)
        assert adapter.max_retries.status == 0 and adapter.max_retries.read == 0
    finally:
        firebase_admin.delete_app(app)


def test_override_is_honoured_by_a_real_send(fcm_emulator: FcmEmulator) -> None:
    sa = ephemeral_service_account(fcm_emulator.token_uri, "override-proj")
    sender = FcmSender(FcmTarget(sa, fcm_emulator.url, ephemeral=True), timeout=5)
    assert sender.send_url == f"{fcm_emulator.url}/v1/projects/override-proj/messages:send"
    event = AnalysisCompleted(analysis_id="a-override", user_id="u1", image_url="/i")
    result = sender.send(build_message(event, "override-token", ttl_seconds=60))
    assert result.message_id and result.message_id.startswith("projects/override-proj/messages/")
    (got,) = fcm_emulator.deliveries("override-token")
    assert got["name"] == result.message_id


def test_missing_attribute_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fake:
        pass

    monkeypatch.setattr(messaging, "_get_messaging_service", lambda app: Fake())
    with pytest.raises(fcm_endpoint.FcmEndpointUnsupported, match=r"bridge/fcm_endpoint\.py"):
        fcm_endpoint.configure(object(), "http://x")  # type: ignore[arg-type]
