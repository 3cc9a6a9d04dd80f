"""The ``plantnotify`` command: one subcommand per part (contract §7).

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; this file only lists them, so adding a part is one line here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "migrate": ("plantnotify.db.cli", "create the database if missing and apply migrations"),
    "broker": ("plantnotify.broker.cli", "run our Mosquitto with the JWT/ACL plugin"),
    "token": ("plantnotify.tokencli", "print an MQTT token or a ready mosquitto_sub line"),
    "worker": ("worker.main", "run the analysis worker (RabbitMQ -> N8N -> PostgreSQL -> MQTT)"),
    "n8n-standin": ("worker.standin", "run the local stand-in for the N8N analysis webhook"),
    "up": ("plantnotify.devstack", "run the whole local stack in the foreground"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plantnotify",
        description="Realtime notifications for plant analyses.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    result: int = module.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
