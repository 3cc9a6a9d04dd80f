"""The only place that touches firebase-admin's private API (pinned: firebase-admin==7.7.0).

firebase-admin has no supported way to send to another endpoint than
``https://fcm.googleapis.com`` (no option, no environment variable; see
../shared/notes/fcm-firebase-admin.md §1), and its HTTP client retries 500/503 and
429-with-Retry-After by itself (§4). Both are adjusted here, per app, on the messaging service
object the SDK caches for that app:

* ``_MessagingService._fcm_url``: the formatted send URL; replaced to honour ``FCM_ENDPOINT``.
* ``_MessagingService._client.session``: a ``requests`` session; we mount our own adapter for
  the FCM base URL so the SDK makes exactly one HTTP attempt per send (plus reconnects that
  never reached the server). Retries are the bridge's job (bridge/retry.py): recorded in the
  database, jittered, honouring ``Retry-After``, bounded, and never multiplied by a second layer.

tests/bridge/test_fcm_endpoint.py fails if an upgrade renames or removes either attribute.
"""

from __future__ import annotations

import logging
from typing import Any

import firebase_admin
import requests.adapters
from firebase_admin import messaging
from urllib3.util.retry import Retry

log = logging.getLogger("plantnotify.bridge.fcm")

PINNED_FIREBASE_ADMIN = "7.7.0"
GOOGLE_FCM_BASE = "https://fcm.googleapis.com"
SEND_PATH = "/v1/projects/{project}/messages:send"


class FcmEndpointUnsupported(RuntimeError):
    """The installed firebase-admin does not have the private attributes we rely on."""


def send_url(base_url: str, project_id: str) -> str:
    return base_url.rstrip("/") + SEND_PATH.format(project=project_id)


def _service(app: firebase_admin.App) -> Any:
    svc = messaging._get_messaging_service(app)
    if not hasattr(svc, "_fcm_url") or not hasattr(getattr(svc, "_client", None), "session"):
        raise FcmEndpointUnsupported(
            f"firebase-admin {firebase_admin.__version__} has no _MessagingService._fcm_url / "
            f"_client.session (written against {PINNED_FIREBASE_ADMIN}); update "
            "bridge/fcm_endpoint.py for this version or pin firebase-admin back"
        )
    return svc


def configure(app: firebase_admin.App, base_url: str | None, *, connect_retries: int = 2) -> str:
    """Point ``app``'s FCM sends at ``base_url`` (default: Google) with our retry policy.

    Returns the send URL in use.
    """
    if firebase_admin.__version__ != PINNED_FIREBASE_ADMIN:
        log.warning(
            "firebase-admin %s is not the pinned %s; the endpoint override may not hold",
            firebase_admin.__version__,
            PINNED_FIREBASE_ADMIN,
        )
    svc = _service(app)
    base = (base_url or GOOGLE_FCM_BASE).rstrip("/")
    svc._fcm_url = send_url(base, str(app.project_id))
    # One attempt per send: no status retries (ours are in the database), no read retries (a POST
    # whose response was lost may have been delivered: resending it is a duplicate push), and a
    # couple of connect retries (nothing reached the server, so they are safe).
    retry = Retry(
        total=connect_retries,
        connect=connect_retries,
        read=0,
        status=0,
        other=0,
        redirect=0,
        backoff_factor=0.1,
        allowed_methods=None,
        raise_on_status=False,
        respect_retry_after_header=False,
    )
    svc._client.session.mount(
        base, requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64, max_retries=retry)
    )
    return str(svc._fcm_url)


def current_send_url(app: firebase_admin.App) -> str:
    return str(_service(app)._fcm_url)
