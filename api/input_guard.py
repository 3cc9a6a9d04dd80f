"""Refuse control characters and broken text in request URLs before any route sees them.

A NUL in a path or query parameter used to reach PostgreSQL and come back as a bare 500
(issue 14, finding 5: ``/plantanalyses/ab%00cd``). Every request whose percent-decoded path or
query string contains a C0 control character, DEL, or bytes that are not UTF-8 is answered
``400`` in the documented error format. JSON bodies are checked by the request models
(``api/schemas.py``: no NUL or lone surrogate in any string), multipart fields by
``api/uploads.py``.
"""

from __future__ import annotations

import json
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

BAD_URL_DETAIL = (
    "The request URL contains a control character (such as NUL) or text that is not UTF-8; "
    "percent-encode only printable UTF-8 text"
)


def url_text_is_clean(raw: bytes, *, plus_is_space: bool = False) -> bool:
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    data = unquote_to_bytes(raw)
    if any(b < 0x20 or b == 0x7F for b in data):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class InputGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
        query = scope.get("query_string", b"")
        if url_text_is_clean(raw_path) and url_text_is_clean(query, plus_is_space=True):
            await self.app(scope, receive, send)
            return
        await send_error(send, 400, BAD_URL_DETAIL)


async def send_error(send: Send, status: int, detail: str, **headers: str) -> None:
    """A JSON error answer (``{"detail"}``) straight from ASGI middleware."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.encode(), value.encode()) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
