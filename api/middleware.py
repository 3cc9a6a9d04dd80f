"""Request id, access log line and latency metric, as one plain ASGI middleware.

``X-Request-ID`` is taken from the request when it is a sane token (else a new one is made),
put into ``log_context`` for every log line of the request (and into the AMQP job), and echoed
in the response.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import ApiMetrics
from plantnotify.logs import get_logger, log_context

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
log = get_logger("plantnotify.api.access")
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _REQUEST_ID_RE.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route's full path template (``/api/v1/plantanalyses/{analysis_id}``), so
    metrics and logs never carry raw ids. FastAPI >= 0.16x keeps included routers nested: the
    route's own ``path`` lacks the include prefix, the effective route context has it."""
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    template = getattr(effective, "path", None) or getattr(scope.get("route"), "path", None)
    return template if isinstance(template, str) else "unmatched"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route = route_template(scope)
                self.metrics.observe_request(scope["method"], route, status, elapsed)
                extra: dict[str, object] = {"duration_ms": round(elapsed * 1000, 1)}
                user_id = scope["state"].get("user_id")
                if user_id:
                    extra["user_id"] = user_id
                quiet = route in _QUIET_ROUTES
                log.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "%s %s %d",
                    scope["method"],
                    route,
                    status,
                    extra=extra,
                )
