"""An OpenAPI document that tells the truth about errors, and 405 for wrong methods.

Issue 14, finding 7: 422 bodies carry ``detail`` (a sentence) and ``errors`` while the schema
declared FastAPI's ``HTTPValidationError``; malformed bodies and bad URLs answer an undocumented
400; a wrong method on an API path fell through to the web app's file server (404, or 405 with
``Allow: GET, HEAD``).

``install_openapi`` post-processes the generated document for every operation, so routes added
later are covered without declaring anything:

- 422 is ``ValidationErrorResponse`` (what ``api/errors.py`` sends);
- 400 (bad URL text, ``api/input_guard.py``; malformed multipart), 503 (database down, queue
  down) are declared everywhere, 401 wherever a bearer token is accepted, 413 wherever there is
  a body (``api/body_limit.py``);
- every error answer without a schema gets ``ErrorResponse``.

``MethodGuardMiddleware`` answers a method that no operation of a documented path has with
``405``, an ``Allow`` header and a JSON body (CORS preflights pass through).
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.input_guard import send_error
from api.schemas import ErrorResponse, ValidationErrorResponse

_ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
_VALIDATION = {"$ref": "#/components/schemas/ValidationErrorResponse"}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_NO_DATABASE = ("/healthz", "/metrics")


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _declare(responses: dict[str, Any], code: str, description: str, **extra: Any) -> None:
    if code not in responses:
        responses[code] = {"description": description, **extra}


def fix_document(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(by_alias=True)
    schemas["ValidationErrorResponse"] = ValidationErrorResponse.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    for name, sub in schemas["ValidationErrorResponse"].pop("$defs", {}).items():
        schemas[name] = sub
    for path, item in spec.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            _declare(
                responses,
                "400",
                "The URL has control characters or text that is not UTF-8, or the body is "
                "malformed",
            )
            if op.get("security"):
                _declare(responses, "401", "No valid, unrevoked access token")
            if "requestBody" in op:
                _declare(responses, "413", "The body is larger than this route accepts")
            if op.get("parameters") or "requestBody" in op:
                responses["422"] = {
                    "description": "Invalid input: `detail` says what, `errors` lists the fields",
                    "content": _json(_VALIDATION),
                }
            if not path.endswith(_NO_DATABASE):
                _declare(responses, "503", "A dependency (database, queue) is unavailable")
            for code, response in responses.items():
                if code[0] in "45" and code != "422":
                    response["content"] = _json(_ERROR)
                if code in ("429", "503"):
                    response.setdefault("headers", {}).update(_RETRY_AFTER)
    for unused in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{unused}"' not in json.dumps(spec):
            schemas.pop(unused, None)
    return spec


def install_openapi(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = fix_document(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _template(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


class MethodGuardMiddleware:
    """405 (with ``Allow``) for a method no operation of a documented path has."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._table: list[tuple[re.Pattern[str], set[str]]] | None = None

    def _paths(self) -> list[tuple[re.Pattern[str], set[str]]]:
        if self._table is None:
            spec = self.fastapi_app.openapi()
            self._table = [
                (_template(path), {m.upper() for m in item if m in _METHODS})
                for path, item in spec.get("paths", {}).items()
            ]
        return self._table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        allowed: set[str] = set()
        for pattern, methods in self._paths():
            if pattern.fullmatch(path):
                allowed |= methods
        if not allowed or method in allowed:
            await self.app(scope, receive, send)
            return
        if "GET" in allowed:
            allowed.add("HEAD")
            if method == "HEAD":
                await self.app(scope, receive, send)
                return
        headers = Headers(scope=scope)
        if method == "OPTIONS" and "access-control-request-method" in headers:
            await self.app(scope, receive, send)  # a CORS preflight: CORSMiddleware answers
            return
        allow = ", ".join(sorted(allowed))
        await send_error(send, 405, f"{method} is not allowed here; use {allow}", allow=allow)
