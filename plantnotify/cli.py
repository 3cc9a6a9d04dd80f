"""The ``plantnotify`` command: one subcommand per part (contract §7).

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; this file only lists them, so adding a part is one line here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from plantnotify.settings import (
    PRODUCTION_NEEDS,
    ConfigError,
    load_settings,
    refuse_unsafe_production,
)

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "migrate": ("plantnotify.db.cli", "create the database if missing and apply migrations"),
    "api": ("api.main", "the HTTP API and web app (uvicorn)"),
    "watch": ("plantnotify.watch.cli", "reference device client: follow your analyses live"),
    "broker": (
        "plantnotify.broker.cli",
        "run our broker: Mosquitto with the plugin, or --engine nats",
    ),
    "broker-metrics": (
        "plantnotify.broker.metrics_main",
        "the broker's CONNECT counters for Prometheus, run where the MQTT signing key is",
    ),
    "auth-callout": (
        "plantnotify.authcallout.cli",
        "decide connections to the NATS engine (our tokens, limits, permissions)",
    ),
    "token": ("plantnotify.tokencli", "print an MQTT token or a ready mosquitto_sub line"),
    "keygen": ("plantnotify.keygen", "write an ES256/RS256 key pair for MQTT tokens (production)"),
    "bridge": ("bridge.main", "live-session tracking and the FCM push fallback"),
    "fcm-emulator": ("devtools.fcm_emulator", "local FCM HTTP v1 emulator (OAuth + messages:send)"),
    "config": ("plantnotify.configdoc", "check the configuration; --markdown prints its table"),
    "bench": ("bench.cli", "benchmarks: latency, connections, fallback, baselines"),
    "worker": ("worker.main", "run the analysis worker (RabbitMQ -> N8N -> PostgreSQL -> MQTT)"),
    "n8n-standin": ("devtools.n8n_standin", "run the local stand-in for the N8N analysis webhook"),
    "up": ("devtools.localstack", "run the whole local stack in the foreground"),
    "rollout": ("plantnotify.rolloutcli", "realtime for PERCENT of users, or `off` (all poll)"),
    "why": ("plantnotify.whycli", "why a notification came or not: an analysis' delivery timeline"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that command's module is imported.

    Importing every part (FastAPI, firebase-admin, pika...) costs seconds, so ``main`` builds
    the arguments of the command being run only; ``--help`` still lists every command.
    """
    parser = argparse.ArgumentParser(
        prog="plantnotify",
        description="Realtime notifications for plant analyses.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if only is None or only == name:
            module = _import_part(module_name)
            if module is None:  # listed, but not part of this installation
                p.description = f"{help_text} (not installed here)"
                continue
            module.add_arguments(p)
    return parser


def _import_part(module_name: str) -> ModuleType | None:
    """The command's module; None when its top-level package is not installed at all (the
    Docker images carry the services and devtools/, not bench/)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name.split(".")[0]:
            return None
        raise


def _command_in(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if arg in COMMANDS), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    parser = build_parser(only=command) if command else build_parser()
    args = parser.parse_args(argv)
    module = _import_part(args._module)
    if module is None:
        print(f"plantnotify {args.command}: not part of this installation", file=sys.stderr)
        return 2
    try:
        if args.command in PRODUCTION_NEEDS:
            refuse_unsafe_production(load_settings(), args.command)
        result: int = module.run(args)
    except ConfigError as exc:
        # Every service loads Settings first; a refused configuration is one clear line, not a
        # traceback (and never echoes the offending value, which may be a secret).
        print(f"plantnotify {args.command}: configuration refused: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
