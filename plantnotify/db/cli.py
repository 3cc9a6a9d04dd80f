"""``plantnotify migrate``."""

from __future__ import annotations

import argparse

from plantnotify.db.session import migrate
from plantnotify.logs import get_logger, setup_logging
from plantnotify.settings import load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="override DATABASE_URL")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings)
    url = args.database_url or settings.database_url
    migrate(url)
    get_logger("plantnotify.migrate").info("database migrated", extra={"database": _safe(url)})
    return 0


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
