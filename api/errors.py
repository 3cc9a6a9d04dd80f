"""Error answers: always ``{"detail": "<what went wrong and what to do>"}`` (plus ``errors``
with the field-level list for 422)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from plantnotify.logs import get_logger

log = get_logger("plantnotify.api.errors")


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) if parts else "request body"


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    messages = []
    for err in errors[:5]:
        where = _field(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            messages.append("the body is not valid JSON; send a JSON object")
        elif err.get("type") == "missing":
            messages.append(f"{where}: required")
        else:
            messages.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(messages)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    return JSONResponse(
        status_code=422,
        content={
            "detail": "Invalid request: " + describe_validation_errors(errors),
            "errors": [
                {
                    "field": _field(e.get("loc", ())),
                    "message": e.get("msg", ""),
                    "type": e.get("type"),
                }
                for e in errors
            ],
        },
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse(
        status_code=503,
        content={"detail": "The database is unavailable right now; try again in a minute"},
        headers={"Retry-After": "30"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    # Connection-level database failures (server down, restarting, too many clients) are an
    # outage, not a bug: 503 with Retry-After instead of a bare 500.
    app.add_exception_handler(OperationalError, _database_unavailable)
