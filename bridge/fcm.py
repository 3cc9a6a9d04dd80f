"""Sending one push through firebase-admin (FCM HTTP v1), and what its answer means.

* :func:`build_message` turns an event into the FCM message (contract §6).
* :func:`classify` turns a firebase-admin / google-auth exception into a :class:`SendResult`
  (errors as data; the retry policy in bridge/retry.py decides what happens next).
* :class:`FcmSender` owns the one firebase app of the process and sends with the synchronous
  API (called from the bridge's thread pool; see the notes on ``send_each_async``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import firebase_admin
import requests
from firebase_admin import credentials, exceptions, messaging
from google.auth import exceptions as auth_exceptions

from bridge import fcm_endpoint
from bridge.credentials import FcmTarget
from bridge.retry import Outcome, parse_retry_after
from plantnotify.contracts.events import (
    AnalysisCompleted,
    AnalysisFailed,
    EventType,
    deep_link,
    truncate,
)

log = logging.getLogger("plantnotify.bridge.fcm")

TITLE_COMPLETED = "Analysis complete"
TITLE_FAILED = "Analysis failed"
ANDROID_CHANNEL_TAG_PREFIX = "analysis-"


def device_ref(token: str) -> str:
    """A log-safe reference to a registration token (tokens themselves are never logged)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def push_body(event: AnalysisCompleted | AnalysisFailed) -> tuple[str, str]:
    if isinstance(event, AnalysisFailed):
        reason = event.error_message.strip() or "the analysis could not be completed"
        return TITLE_FAILED, truncate(f"Your plant analysis failed: {reason}", 180)
    crop = (event.crop_type or "").strip() or "Your plant"
    crop = crop[0].upper() + crop[1:]
    parts = [crop]
    if event.overall_health_score is not None:
        parts.append(f"health score {event.overall_health_score}/100")
    else:
        parts.append("result ready")
    body = ": ".join(parts)
    if event.primary_concern:
        body += f" · {event.primary_concern.strip()}"
    return TITLE_COMPLETED, truncate(body, 180)


def build_message(
    event: AnalysisCompleted | AnalysisFailed,
    token: str,
    *,
    ttl_seconds: int,
    web_base_url: str | None = None,
    now: float | None = None,
) -> messaging.Message:
    """The FCM message for one device. ``data`` holds strings only (FCM refuses others)."""
    title, body = push_body(event)
    collapse = event.analysis_id  # one collapse key per analysis: a re-push replaces, not piles
    data = {
        "event": str(EventType(event.event)),
        "eventId": event.event_id,
        "analysisId": event.analysis_id,
        "deepLink": deep_link(event.analysis_id),
    }
    expires = int((now if now is not None else time.time()) + ttl_seconds)
    webpush_headers = {"TTL": str(ttl_seconds), "Urgency": "high"}
    webpush_options = None
    if web_base_url and web_base_url.startswith("https://"):
        webpush_options = messaging.WebpushFCMOptions(
            link=f"{web_base_url.rstrip('/')}/#/analyses/{event.analysis_id}"  # the web app's route
        )
    with warnings.catch_warnings():
        # firebase-admin 7.5+ deprecates ``token=`` in favour of ``fid=`` (installation ids);
        # our devices register FCM registration tokens, which FCM v1 takes in ``token``.
        warnings.simplefilter("ignore", DeprecationWarning)
        return messaging.Message(
            token=token,
            data=data,
            notification=messaging.Notification(title=title, body=body),
            android=messaging.AndroidConfig(
                priority="high",
                ttl=timedelta(seconds=ttl_seconds),
                collapse_key=collapse,
                notification=messaging.AndroidNotification(tag=collapse),
            ),
            apns=messaging.APNSConfig(
                headers={
                    "apns-priority": "10",
                    "apns-push-type": "alert",
                    "apns-collapse-id": collapse,
                    "apns-expiration": str(expires),
                },
                payload=messaging.APNSPayload(
                    aps=messaging.Aps(sound="default", thread_id="plant-analyses")
                ),
            ),
            webpush=messaging.WebpushConfig(
                headers=webpush_headers,
                notification=messaging.WebpushNotification(tag=collapse),
                fcm_options=webpush_options,
            ),
        )


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    message_id: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    detail: str = ""
    retry_after: float | None = None


def _response_json(resp: Any) -> dict[str, Any]:
    try:
        body = resp.json()
    except (ValueError, AttributeError):
        return {}
    return body if isinstance(body, dict) else {}


def _is_bad_token(exc: exceptions.FirebaseError) -> bool:
    """400 INVALID_ARGUMENT means a bad token only when FCM says so: an FcmError detail and a
    message about the registration token. A ``google.rpc.BadRequest`` detail means the payload
    was wrong, and the device must not pay for our bug."""
    err = _response_json(exc.http_response).get("error") or {}
    details = err.get("details") or []
    types = {d.get("@type", "") for d in details if isinstance(d, dict)}
    if any(t.endswith("google.rpc.BadRequest") for t in types):
        return False
    message = str(err.get("message") or exc)
    return "registration token" in message.lower()


def _fcm_code(exc: exceptions.FirebaseError) -> str:
    err = _response_json(exc.http_response).get("error") or {}
    for d in err.get("details") or []:
        if isinstance(d, dict) and d.get("errorCode"):
            return str(d["errorCode"])
    return str(exc.code)


def classify(exc: BaseException) -> SendResult:
    """What an exception from ``messaging.send`` means for this push and this device."""
    if isinstance(exc, auth_exceptions.RefreshError):
        # The OAuth token endpoint refused our service account: a configuration problem
        # (revoked key, wrong token_uri, clock skew). Not the device's fault.
        return SendResult(Outcome.CONFIG, error_code="OAUTH_REFRESH", detail=_short(exc))
    if isinstance(exc, auth_exceptions.TransportError):
        return SendResult(Outcome.RETRY, error_code="OAUTH_UNREACHABLE", detail=_short(exc))
    if isinstance(exc, exceptions.FirebaseError):
        resp = exc.http_response
        status = getattr(resp, "status_code", None)
        code = _fcm_code(exc)
        retry_after = (
            parse_retry_after(resp.headers.get("Retry-After")) if resp is not None else None
        )
        result = {"http_status": status, "error_code": code, "detail": _short(exc)}
        if isinstance(exc, messaging.UnregisteredError):
            return SendResult(Outcome.DEVICE_GONE, **result)  # type: ignore[arg-type]
        if isinstance(exc, exceptions.InvalidArgumentError):
            outcome = Outcome.DEVICE_GONE if _is_bad_token(exc) else Outcome.FAILED
            return SendResult(outcome, **result)  # type: ignore[arg-type]
        if isinstance(exc, messaging.SenderIdMismatchError):
            # The token belongs to another Firebase project. Deleting it would be wrong if our
            # own project id is what is misconfigured, so the push fails and the device stays.
            return SendResult(Outcome.FAILED, **result)  # type: ignore[arg-type]
        if isinstance(
            exc,
            messaging.ThirdPartyAuthError
            | exceptions.UnauthenticatedError
            | exceptions.PermissionDeniedError,
        ):
            return SendResult(Outcome.CONFIG, **result)  # type: ignore[arg-type]
        if isinstance(
            exc,
            exceptions.ResourceExhaustedError
            | exceptions.UnavailableError
            | exceptions.InternalError
            | exceptions.DeadlineExceededError,
        ):
            return SendResult(Outcome.RETRY, retry_after=retry_after, **result)  # type: ignore[arg-type]
        if isinstance(exc, exceptions.NotFoundError):
            # A 404 without UNREGISTERED: the URL or project id is wrong, not the token.
            return SendResult(Outcome.CONFIG, **result)  # type: ignore[arg-type]
        if isinstance(exc, exceptions.UnknownError) and (status is None or status >= 500):
            return SendResult(Outcome.RETRY, retry_after=retry_after, **result)  # type: ignore[arg-type]
        return SendResult(Outcome.FAILED, **result)  # type: ignore[arg-type]
    if isinstance(exc, requests.RequestException | OSError):
        return SendResult(Outcome.RETRY, error_code="NETWORK", detail=_short(exc))
    if isinstance(exc, ValueError):
        return SendResult(Outcome.FAILED, error_code="INVALID_MESSAGE", detail=_short(exc))
    return SendResult(Outcome.FAILED, error_code=type(exc).__name__, detail=_short(exc))


def _short(exc: BaseException) -> str:
    return truncate(f"{type(exc).__name__}: {exc}".replace("\n", " "), 300)


_APPS: dict[str, firebase_admin.App] = {}
_APPS_LOCK = threading.Lock()


def _app_for(target: FcmTarget, timeout: float) -> firebase_admin.App:
    """One firebase app per process and configuration (production has exactly one)."""
    identity = json.dumps(
        [target.project_id, target.client_email, target.endpoint, timeout], sort_keys=True
    )
    name = "plantnotify-bridge-" + hashlib.sha256(identity.encode()).hexdigest()[:12]
    with _APPS_LOCK:
        app = _APPS.get(name)
        if app is None:
            app = firebase_admin.initialize_app(
                credentials.Certificate(target.service_account),
                {"projectId": target.project_id, "httpTimeout": timeout},
                name=name,
            )
            fcm_endpoint.configure(app, target.endpoint)
            _APPS[name] = app
        return app


class FcmSender:
    """Sends one message at a time (thread-safe: the bridge calls it from a pool)."""

    def __init__(self, target: FcmTarget, *, timeout: float = 10.0) -> None:
        self.target = target
        self.app = _app_for(target, timeout)

    @property
    def send_url(self) -> str:
        return fcm_endpoint.current_send_url(self.app)

    def send(self, message: messaging.Message) -> SendResult:
        try:
            name = messaging.send(message, app=self.app)  # app= as keyword: 2nd arg is dry_run
        except Exception as exc:
            return classify(exc)
        return SendResult(Outcome.SENT, message_id=name, http_status=200)
