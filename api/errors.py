"""Error answers: always ``{"detail": "<what went wrong and what to do>"}`` (plus ``errors``
with the field-level list for 422)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


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


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
