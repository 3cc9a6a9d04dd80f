"""A local FCM (HTTP v1) emulator: a real HTTP server speaking the real wire protocol.

It is what the bridge talks to in ``make up`` and in tests, through the unmodified
firebase-admin code path:

* ``POST /token`` — the OAuth 2.0 token endpoint of a service account (the ``token_uri``):
  a JWT-bearer grant in, ``{"access_token", "expires_in": 3600, "token_type": "Bearer"}`` out.
  A service account whose ``client_email`` starts with ``revoked-`` gets ``400 invalid_grant``
  (what Google answers for a deleted key), so credential failures can be tested.
* ``POST /v1/projects/{project}/messages:send`` — checks the bearer token came from
  ``/token``, validates the message like FCM does (one target, string-only ``data``, reserved
  keys, TTL, priorities, https web push links, 4 KiB payload) and answers
  ``{"name": "projects/{project}/messages/{id}"}`` or FCM's ``google.rpc.Status`` error bodies.
* ``GET /messages`` (JSON list of delivered messages, newest last; ``?token=`` filters),
  ``GET /attempts`` (every send attempt with its HTTP status), ``DELETE /messages`` (forget),
  ``GET /`` (an HTML page listing deliveries; the web app links to it), ``GET /healthz``.

Deterministic behaviours by registration-token prefix (for tests and demos):
``dead-`` 404 UNREGISTERED · ``bad-`` 400 INVALID_ARGUMENT (not a valid registration token) ·
``quota-`` 429 QUOTA_EXCEEDED with ``Retry-After: 1`` on the first attempt, then 200 ·
``exhaust-`` always 429 · ``flaky-`` 503 UNAVAILABLE on the first attempt, then 200 ·
``down-`` always 503 · ``internal-`` always 500 · ``mismatch-`` 403 SENDER_ID_MISMATCH.
Any other token is delivered.
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import logging
import re
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

log = logging.getLogger("plantnotify.fcm_emulator")

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
MAX_BODY = 64 * 1024
MAX_PAYLOAD = 4096  # FCM's limit for a message to a token
MAX_TTL_SECONDS = 2_419_200  # 28 days
TOKEN_LIFETIME = 3600
KEEP_DELIVERIES = 10_000
_SEND_PATH = re.compile(r"^/v1/projects/([A-Za-z0-9._:-]{1,128})/messages:send$")
_TTL = re.compile(r"^\d{1,9}(\.\d{1,9})?s$")
_RESERVED_DATA_KEYS = {"from", "notification", "message_type"}
_RESERVED_DATA_PREFIXES = ("google", "gcm")


class _Reject(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def rpc_error(
    http_status: int,
    status: str,
    message: str,
    *,
    fcm_code: str | None = None,
    violations: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """A google.rpc.Status error body, as FCM returns it."""
    details: list[dict[str, Any]] = []
    if fcm_code:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": fcm_code})
    if violations:
        details.append(
            {
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": f, "description": d} for f, d in violations],
            }
        )
    err: dict[str, Any] = {"code": http_status, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def _invalid(field_name: str, description: str) -> _Reject:
    return _Reject(
        400,
        rpc_error(
            400,
            "INVALID_ARGUMENT",
            f"Invalid value at '{field_name}': {description}",
            violations=[(field_name, description)],
        ),
    )


def _str_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _invalid(where, "must be a map of strings")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise _invalid(f"{where}[{k}]", "values must be strings")
    return value


def validate_message(body: Any) -> tuple[dict[str, Any], str]:
    """Check a ``messages:send`` body like FCM; return the message and its target token."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise _invalid("message", "a message object is required")
    msg: dict[str, Any] = body["message"]
    targets = [k for k in ("token", "fid", "topic", "condition") if k in msg]
    if len(targets) != 1:
        raise _invalid("message", "exactly one of token, fid, topic or condition is required")
    target = msg[targets[0]]
    if not isinstance(target, str) or not target:
        raise _invalid(f"message.{targets[0]}", "must be a non-empty string")
    if "data" in msg:
        data = _str_map(msg["data"], "message.data")
        for key in data:
            if key in _RESERVED_DATA_KEYS or key.startswith(_RESERVED_DATA_PREFIXES):
                raise _invalid(f"message.data[{key}]", "is a reserved key")
    if "notification" in msg:
        note = msg["notification"]
        if not isinstance(note, dict):
            raise _invalid("message.notification", "must be an object")
        for key in ("title", "body", "image"):
            if key in note and not isinstance(note[key], str):
                raise _invalid(f"message.notification.{key}", "must be a string")
    android = msg.get("android")
    if android is not None:
        if not isinstance(android, dict):
            raise _invalid("message.android", "must be an object")
        if android.get("priority", "normal") not in ("normal", "high"):
            raise _invalid("message.android.priority", "must be NORMAL or HIGH")
        if "ttl" in android:
            ttl = android["ttl"]
            if not isinstance(ttl, str) or not _TTL.match(ttl) or float(ttl[:-1]) > MAX_TTL_SECONDS:
                raise _invalid("message.android.ttl", "must be a duration up to 2419200s")
        if "collapse_key" in android and not isinstance(android["collapse_key"], str):
            raise _invalid("message.android.collapse_key", "must be a string")
        if "data" in android:
            _str_map(android["data"], "message.android.data")
    apns = msg.get("apns")
    if apns is not None:
        if not isinstance(apns, dict):
            raise _invalid("message.apns", "must be an object")
        headers = _str_map(apns.get("headers", {}), "message.apns.headers")
        if headers.get("apns-priority", "10") not in ("5", "10"):
            raise _invalid("message.apns.headers[apns-priority]", "must be 5 or 10")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            raise _invalid("message.apns.headers[apns-collapse-id]", "must be at most 64 bytes")
    webpush = msg.get("webpush")
    if webpush is not None:
        if not isinstance(webpush, dict):
            raise _invalid("message.webpush", "must be an object")
        _str_map(webpush.get("headers", {}), "message.webpush.headers")
        link = (webpush.get("fcm_options") or {}).get("link")
        if link is not None and (not isinstance(link, str) or not link.startswith("https://")):
            raise _invalid("message.webpush.fcm_options.link", "must be an https URL")
    size = len(json.dumps({k: v for k, v in msg.items() if k not in targets}).encode())
    if size > MAX_PAYLOAD:
        raise _Reject(
            400,
            rpc_error(
                400,
                "INVALID_ARGUMENT",
                f"Message is too big: {size} bytes (limit {MAX_PAYLOAD})",
                violations=[("message", "Message payload too big")],
            ),
        )
    return msg, target


@dataclass
class _State:
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # access token -> (sa, exp)
    deliveries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP_DELIVERIES))
    attempts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP_DELIVERIES))
    seen: dict[str, int] = field(default_factory=dict)  # registration token -> attempts
    token_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))


def _behaviour(token: str, attempt: int) -> _Reject | None:
    """The scripted answer for a registration token on its ``attempt``-th send (1-based)."""
    if token.startswith("dead-"):
        return _Reject(
            404,
            rpc_error(404, "NOT_FOUND", "Requested entity was not found.", fcm_code="UNREGISTERED"),
        )
    if token.startswith("bad-"):
        return _Reject(
            400,
            rpc_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                fcm_code="INVALID_ARGUMENT",
            ),
        )
    if token.startswith("exhaust-") or (token.startswith("quota-") and attempt == 1):
        return _Reject(
            429,
            rpc_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests'.",
                fcm_code="QUOTA_EXCEEDED",
            ),
            {"Retry-After": "1"},
        )
    if token.startswith("down-") or (token.startswith("flaky-") and attempt == 1):
        return _Reject(
            503,
            rpc_error(
                503, "UNAVAILABLE", "The service is currently unavailable.", fcm_code="UNAVAILABLE"
            ),
        )
    if token.startswith("internal-"):
        return _Reject(
            500, rpc_error(500, "INTERNAL", "Internal error encountered.", fcm_code="INTERNAL")
        )
    if token.startswith("mismatch-"):
        return _Reject(
            403,
            rpc_error(
                403,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                fcm_code="SENDER_ID_MISMATCH",
            ),
        )
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line's query can carry a device token (GET /messages?token=...), which
        # must not reach a log: method, path and status only.
        log.debug("%s %s %s", self.command, urlsplit(self.path).path, code)

    # --- plumbing -------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: Any,
        *,
        content_type: str = "application/json; charset=UTF-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True  # the unread body must not be taken for a request
            raise _Reject(413, rpc_error(413, "INVALID_ARGUMENT", "Request too large"))
        return self.rfile.read(length) if length > 0 else b""

    # --- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        state = self.server.state
        if url.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif url.path == "/messages":
            token = parse_qs(url.query).get("token", [None])[0]
            with state.lock:
                items = [d for d in state.deliveries if token is None or d["token"] == token]
            self._send(200, items)
        elif url.path == "/attempts":
            with state.lock:
                self._send(200, list(state.attempts))
        elif url.path == "/":
            self._send(200, self._page(), content_type="text/html; charset=UTF-8")
        else:
            self._send(404, rpc_error(404, "NOT_FOUND", "Not found"))

    def do_DELETE(self) -> None:
        if urlsplit(self.path).path != "/messages":
            self._send(404, rpc_error(404, "NOT_FOUND", "Not found"))
            return
        with self.server.state.lock:
            self.server.state.deliveries.clear()
            self.server.state.attempts.clear()
        self._send(200, {})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            raw = self._body()  # always read it first: the connection is kept alive
            if path == "/token":
                self._token(raw)
                return
            match = _SEND_PATH.match(path)
            if not match:
                raise _Reject(404, rpc_error(404, "NOT_FOUND", "Not found"))
            self._messages_send(match.group(1), raw)
        except _Reject as rej:
            self._send(rej.status, rej.body, headers=rej.headers)

    def _token(self, raw: bytes) -> None:
        state = self.server.state
        form = parse_qs(raw.decode("utf-8", "replace"))
        grant = form.get("grant_type", [""])[0]
        assertion = form.get("assertion", [""])[0]
        with state.lock:
            state.token_requests += 1
        if grant != JWT_BEARER_GRANT or not assertion:
            raise _Reject(400, {"error": "unsupported_grant_type"})
        try:
            # The emulator cannot know the service account's public key; it checks the shape
            # (RS256, issuer, scope, lifetime) of what google-auth sends, not the signature.
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _Reject(
                400, {"error": "invalid_grant", "error_description": "Invalid JWT."}
            ) from None
        issuer = claims.get("iss")
        if header.get("alg") != "RS256" or not isinstance(issuer, str) or "scope" not in claims:
            raise _Reject(400, {"error": "invalid_grant", "error_description": "Invalid JWT."})
        if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            raise _Reject(
                400, {"error": "invalid_grant", "error_description": "Invalid JWT: expired."}
            )
        if issuer.startswith("revoked-"):
            raise _Reject(
                400,
                {
                    "error": "invalid_grant",
                    "error_description": "Invalid grant: account not found",
                },
            )
        access = "ya29.emulator-" + secrets.token_urlsafe(24)
        with state.lock:
            now = time.time()
            state.tokens = {k: v for k, v in state.tokens.items() if v[1] > now}
            state.tokens[access] = (issuer, now + TOKEN_LIFETIME)
        self._send(
            200, {"access_token": access, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}
        )

    def _messages_send(self, project: str, raw: bytes) -> None:
        state = self.server.state
        auth = self.headers.get("Authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else ""
        with state.lock:
            known = state.tokens.get(bearer)
        if known is None or known[1] < time.time():
            raise _Reject(
                401,
                rpc_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                ),
            )
        try:
            body = json.loads(raw)
        except ValueError:
            raise _invalid("message", "Invalid JSON payload received.") from None
        attempt: dict[str, Any] = {"at": time.time(), "project": project}
        try:
            msg, target = validate_message(body)
            with state.lock:
                n = state.seen.get(target, 0) + 1
                state.seen[target] = n
            attempt.update(token=target, attempt=n)
            rejection = _behaviour(target, n)
            if rejection is not None:
                raise rejection
        except _Reject as rej:
            attempt["status"] = rej.status
            with state.lock:
                state.attempts.append(attempt)
            raise
        with state.lock:
            name = f"projects/{project}/messages/{next(state.ids)}"
            attempt["status"] = 200
            state.attempts.append(attempt)
            if not body.get("validate_only"):
                state.deliveries.append(
                    {
                        "name": name,
                        "receivedAt": attempt["at"],
                        "token": target,
                        "message": msg,
                        "headers": {
                            k.lower(): v
                            for k, v in self.headers.items()
                            if k.lower().startswith(("x-goog", "x-firebase"))
                        },
                    }
                )
        if body.get("validate_only"):
            name = f"projects/{project}/messages/fake_message_id"
        self._send(200, {"name": name})

    def _page(self) -> bytes:
        with self.server.state.lock:
            items = list(self.server.state.deliveries)[-200:]
        rows = []
        for d in reversed(items):
            m = d["message"]
            note = m.get("notification", {})
            data = m.get("data", {})
            rows.append(
                "<tr><td>{}</td><td><code>{}</code></td><td><b>{}</b><br>{}</td>"
                "<td><code>{}</code></td></tr>".format(
                    html.escape(time.strftime("%H:%M:%S", time.localtime(d["receivedAt"]))),
                    html.escape(d["token"][:24]),
                    html.escape(str(note.get("title", ""))),
                    html.escape(str(note.get("body", ""))),
                    html.escape(json.dumps(data)),
                )
            )
        table = "".join(rows) or '<tr><td colspan="4">No push delivered yet.</td></tr>'
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<meta http-equiv='refresh' content='2'><title>FCM emulator</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style>"
            "</head><body><h1>FCM emulator: delivered pushes</h1>"
            "<p>Newest first; JSON at <a href='/messages'>/messages</a>.</p>"
            "<table><tr><th>time</th><th>device token</th><th>notification</th><th>data</th>"
            f"</tr>{table}</table></body></html>"
        ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int]) -> None:
        super().__init__(addr, _Handler)
        self.state = _State()


class FcmEmulator:
    """The emulator as an object: ``start()`` serves on a thread, ``stop()`` shuts it down."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        shown = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{shown}:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def start(self) -> FcmEmulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fcm-emulator", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def deliveries(self, token: str | None = None) -> list[dict[str, Any]]:
        with self._server.state.lock:
            return [d for d in self._server.state.deliveries if token in (None, d["token"])]

    def attempts(self, token: str | None = None) -> list[dict[str, Any]]:
        with self._server.state.lock:
            return [a for a in self._server.state.attempts if token in (None, a.get("token"))]

    @property
    def token_requests(self) -> int:
        return self._server.state.token_requests


@contextmanager
def running(host: str = "127.0.0.1", port: int = 0) -> Iterator[FcmEmulator]:
    emu = FcmEmulator(host, port).start()
    try:
        yield emu
    finally:
        emu.stop()


# --- ``plantnotify fcm-emulator`` ------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default FCM_EMULATOR_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default FCM_EMULATOR_PORT, 8200)")


def run(args: argparse.Namespace) -> int:
    from plantnotify.logs import setup_logging
    from plantnotify.settings import load_settings

    settings = load_settings()
    setup_logging(settings, service="fcm-emulator")
    port = args.port if args.port is not None else settings.fcm_emulator_port
    host = args.host or settings.fcm_emulator_host
    try:
        emu = FcmEmulator(host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%s (%s); pick another with --port", host, port, exc)
        return 2
    stop = threading.Event()

    def _terminate(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    emu.start()
    log.info("FCM emulator listening", extra={"url": emu.url})
    if settings.log_format == "text":  # for people; a JSON log stream stays JSON only
        print(f"FCM emulator: {emu.url}/  (token endpoint {emu.token_uri})", flush=True)
    stop.wait()
    emu.stop()
    log.info("FCM emulator stopped")
    return 0
