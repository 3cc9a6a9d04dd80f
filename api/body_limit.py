"""A size limit on request bodies (JSON is tiny here), with the API's JSON error shape.

Uploads are exempt: ``api.uploads`` streams them against ``MAX_UPLOAD_MB`` itself. A declared
``Content-Length`` over the limit is answered at once, without reading anything; a chunked body
is counted while it is read and refused when it crosses the limit.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_LIMIT = 16 * 1024


def _message(limit: int) -> str:
    return f"The request body is larger than {limit // 1024} KiB; send a smaller JSON body"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int = DEFAULT_LIMIT, exempt: Collection[str] = ()):
        self.app = app
        self.limit = limit
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await JSONResponse({"detail": _message(self.limit)}, status_code=413)(
                scope, receive, send
            )
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # An HTTPException from inside the route becomes the usual JSON answer.
                    raise HTTPException(413, _message(self.limit))
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
