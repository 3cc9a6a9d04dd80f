"""``plantnotify auth-callout``: the service that decides connections to the NATS engine.

Run one beside every node (``--servers`` lists that node first, then the others to fail over
to). SIGTERM / Ctrl-C stop it; the other callouts of the queue group keep answering.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from plantnotify.authcallout.service import AuthCallout, serve
from plantnotify.logs import get_logger, setup_logging
from plantnotify.settings import ConfigError, load_settings

log = get_logger("plantnotify.authcallout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--servers",
        default=None,
        help="NATS client URLs, comma-separated, this node's first (default: NATS_URLS)",
    )
    parser.add_argument("--name", default="auth-callout", help="connection name (logs, CONNZ)")
    parser.add_argument(
        "--heartbeat",
        type=Path,
        default=None,
        help="touch this file every 5 s while connected (health check: "
        "python -m plantnotify.healthcheck file:///that/file)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=30.0,
        help="re-read every node's connections this often (a killed node sends no DISCONNECT)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except (ConfigError, ValueError) as exc:
        print(f"plantnotify auth-callout: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings, service="auth-callout")
    servers = (
        [s.strip() for s in args.servers.split(",") if s.strip()]
        if args.servers
        else settings.nats_url_list
    )
    callout = AuthCallout(
        settings,
        servers,
        resync_seconds=args.resync_seconds,
        name=args.name,
        heartbeat=args.heartbeat,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(callout, stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        log.error("auth callout cannot reach NATS at %s: %s", ", ".join(servers), exc)
        return 1
    return 0
