"""Security headers on every answer of the API process (issue 14, finding 6: the web app at
``/`` had no CSP, no frame-ancestors, no nosniff).

- Everything: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY``, ``Cross-Origin-Opener-Policy: same-origin``,
  ``Permissions-Policy`` turning off what the app never uses.
- HTML (the web app): a Content-Security-Policy allowing only the app's own files, ``blob:``
  and ``data:`` images (photo previews), and WebSocket connections to the broker's public URL.
- ``/docs`` (Swagger UI, development only: it is off in production) may load its assets from
  the jsDelivr CDN it is built for.
- JSON: ``default-src 'none'; frame-ancestors 'none'``. Scripts and styles get no CSP of
  their own (a service worker's script CSP would govern the worker itself).

A header a route set itself (the image endpoint's sandbox CSP) is kept.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from plantnotify.settings import Settings

DOCS_PATH = "/docs"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


def websocket_sources(ws_url: str) -> list[str]:
    """CSP sources for the broker's WebSocket URL. The web app swaps a loopback host for the
    page's host (a phone on the LAN), so a loopback URL allows that port on any host."""
    parts = urlsplit(ws_url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return []
    port = f":{parts.port}" if parts.port else ""
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    sources = [f"{parts.scheme}://{host}{port}"]
    if parts.hostname in _LOOPBACK:
        sources.append(f"{parts.scheme}://*{port}")
    return sources


def web_csp(settings: Settings) -> str:
    connect = " ".join(["'self'", *websocket_sources(settings.mqtt_public_ws_url)])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' blob: data:; font-src 'self'; "
        # worker-src blob: mqtt.js runs its keepalive timers in a Worker made from a blob URL,
        # so a background tab's timer throttling cannot starve the MQTT pings.
        f"connect-src {connect}; worker-src 'self' blob:; manifest-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    )


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.web_csp = web_csp(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_docs = scope.get("path", "") == DOCS_PATH

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in COMMON.items():
                    if name not in headers:
                        headers[name] = value
                if "content-security-policy" not in headers:
                    kind = headers.get("content-type", "")
                    if is_docs:
                        headers["Content-Security-Policy"] = DOCS_CSP
                    elif kind.startswith("text/html"):
                        headers["Content-Security-Policy"] = self.web_csp
                    elif kind.startswith("application/json"):
                        headers["Content-Security-Policy"] = API_CSP
                    # Scripts get none: a service worker's own script's CSP would bind the
                    # worker (default-src 'none' stopped its fetches after a reload).
            await send(message)

        await self.app(scope, receive, send_with_headers)
