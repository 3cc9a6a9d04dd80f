"""``plantnotify api``: the common start-up (``plantnotify.boot``: settings -> logging -> wait
for PostgreSQL -> create and migrate the database) -> uvicorn -> clean shutdown on
SIGTERM/SIGINT (uvicorn stops accepting, finishes requests and runs the lifespan shutdown).

Exit codes are those of ``plantnotify.boot``: 0 after a clean shutdown, 1 when PostgreSQL did
not answer in time or the server could not start, 2 for a configuration error.
"""

from __future__ import annotations

import argparse

import uvicorn

from plantnotify.boot import POSTGRESQL, Boot, BootFailure, run_service
from plantnotify.logs import get_logger

log = get_logger("plantnotify.api")
GRACEFUL_SHUTDOWN_SECONDS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default API_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default API_PORT, 8000)")


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.host:
        overrides["api_host"] = args.host
    if args.port:
        overrides["api_port"] = args.port
    return run_service("api", main, overrides=overrides, dependencies=(POSTGRESQL,))


def main(boot: Boot) -> None:
    from api.app import create_app

    settings = boot.settings
    app = create_app(settings)
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
    # uvicorn handles SIGTERM/SIGINT itself while it runs, then re-raises the signal into the
    # handler installed before it: the boot's, which records it, so a requested stop ends 0.
    try:
        server.run()
    except SystemExit:  # uvicorn's own exit (3) when it cannot bind: our code for that is 1
        server.started = False
    if not server.started:
        raise BootFailure(f"the API did not start (is port {settings.api_port} free?)")
    log.info("API stopped", extra={"signal": boot.signals[0] if boot.signals else None})
