"""Logging set-up shared by every service: text for people, JSON for log shippers.

Correlation ids (request, analysis, event) travel in context variables and are added to every
record. Log user ids only: never usernames, tokens or image bytes.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plantnotify.settings import Settings

_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "plantnotify_log_context",
    default={},  # noqa: B039 (never mutated in place)
)

# color_message: uvicorn's ANSI-coloured copy of every message; noise in both formats.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
# The process's part (api, worker, ...): process-wide, not a context variable, because threads
# (thread pools, paho's network thread) start with an empty context.
_SERVICE: dict[str, str] = {}


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add correlation fields (``request_id``, ``analysis_id``, ``event_id``...) to log lines."""
    merged = {**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_context() -> dict[str, str]:
    return dict(_CONTEXT.get())


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {**_SERVICE, **_CONTEXT.get()}
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def setup_logging(settings: Settings | None = None, *, service: str | None = None) -> None:
    level = settings.log_level if settings else "INFO"
    fmt = settings.log_format if settings else "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in (
        "pika",
        "urllib3",
        "httpx",
        "httpcore",
        "alembic.runtime.migration",
        "alembic.runtime.plugins",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if service:
        _SERVICE["service"] = service


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
