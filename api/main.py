"""``plantnotify api``: settings -> logging -> wait for PostgreSQL (bounded; create and migrate
the database when it does not exist yet) -> uvicorn -> clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import time

import uvicorn
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from plantnotify.db.session import ensure_database, migrate
from plantnotify.logs import get_logger, setup_logging
from plantnotify.settings import ConfigError, Settings, load_settings

log = get_logger("plantnotify.api")
GRACEFUL_SHUTDOWN_SECONDS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default API_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default API_PORT, 8000)")


class DependencyTimeout(RuntimeError):
    pass


def prepare_database(settings: Settings) -> None:
    """Wait (bounded) until PostgreSQL answers; create and migrate the database if it is new."""
    url = settings.database_url
    deadline = time.monotonic() + settings.startup_timeout_seconds
    while True:
        try:
            created = ensure_database(url)
            break
        except Exception as exc:  # connection refused, DNS, auth... keep trying until deadline
            if time.monotonic() >= deadline:
                raise DependencyTimeout(
                    f"PostgreSQL at {_safe(url)} did not answer within "
                    f"{settings.startup_timeout_seconds:g}s ({type(exc).__name__}); "
                    "start it (make services) or fix DATABASE_URL"
                ) from None
            time.sleep(1.0)
    if created or not _has_schema(url):
        log.info("database is new: applying migrations", extra={"database": _safe(url)})
        migrate(url)


def _has_schema(url: str) -> bool:
    engine = create_engine(url)
    try:
        return inspect(engine).has_table("alembic_version")
    finally:
        engine.dispose()


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.host:
        overrides["api_host"] = args.host
    if args.port:
        overrides["api_port"] = args.port
    try:
        settings = load_settings(**overrides)
    except (ConfigError, ValueError) as exc:
        setup_logging(None, service="api")
        log.error("configuration error: %s", exc)
        return 2
    setup_logging(settings, service="api")
    try:
        prepare_database(settings)
    except DependencyTimeout as exc:
        log.error("%s", exc)
        return 1

    from api.app import create_app

    try:
        app = create_app(settings)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # our logging set-up
        access_log=False,  # RequestContextMiddleware logs one line per request
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(config)
    log.info(
        "API listening",
        extra={"url": f"http://{settings.api_host}:{settings.api_port}", "docs": "/docs"},
    )
    # uvicorn handles SIGTERM/SIGINT itself (stop accepting, finish requests, run the
    # lifespan shutdown), then re-raises the signal into the handler that was installed
    # before it; ours just notes it, so a requested stop ends with exit status 0.
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    server.run()
    if not server.started:
        log.error("the API did not start (is port %d free?)", settings.api_port)
        return 1
    log.info("API stopped", extra={"signal": received[0] if received else None})
    return 0
