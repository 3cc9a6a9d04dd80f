"""Readiness checks: is each dependency reachable right now? Bounded, run concurrently."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from sqlalchemy import Engine

from api import store
from plantnotify.settings import Settings

CHECK_TIMEOUT_SECONDS = 2.0
OK = "ok"


async def _tcp(host: str, port: int) -> str:
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), CHECK_TIMEOUT_SECONDS
        )
    except TimeoutError:
        return f"no answer from {host}:{port} within {CHECK_TIMEOUT_SECONDS:g}s"
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or exc})"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return OK


def _select_one(engine: Engine) -> str:
    try:
        store.ping(engine)
    except Exception as exc:  # any driver error means "not ready"; the reason is logged by caller
        return f"query failed ({type(exc).__name__})"
    return OK


async def _database(engine: Engine) -> str:
    try:
        return await asyncio.wait_for(asyncio.to_thread(_select_one, engine), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"


def rabbitmq_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 5671 if parts.scheme == "amqps" else 5672
    return parts.hostname or "localhost", parts.port or default


async def check_dependencies(settings: Settings, engine: Engine) -> dict[str, str]:
    names = ("database", "rabbitmq", "mqtt")
    results = await asyncio.gather(
        _database(engine),
        _tcp(*rabbitmq_address(settings.rabbitmq_url)),
        _tcp(settings.mqtt_host, settings.mqtt_port),
    )
    return dict(zip(names, results, strict=True))
