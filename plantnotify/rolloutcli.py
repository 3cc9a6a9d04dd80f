"""``plantnotify rollout PERCENT`` · ``plantnotify rollout off`` · ``plantnotify rollout``.

Sets the share of users who get realtime (MQTT) updates; the others poll ``/notifications``.
``off`` (= 0) is the kill switch. Takes effect without a restart: the API reads the setting from
the database on every ``/config`` and realtime-token request, and clients re-read ``/config``
every ``ROLLOUT_CHECK_SECONDS``. Without an argument it prints the current setting.
"""

from __future__ import annotations

import argparse
import sys

from plantnotify import rollout
from plantnotify.db.session import make_engine, session_factory
from plantnotify.settings import load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "percent",
        nargs="?",
        metavar="PERCENT|off",
        help="0-100: share of users with realtime (stable per user); off: everybody polls",
    )


def parse_percent(text: str) -> int:
    word = text.strip().lower().removesuffix("%")
    if word in ("off", "0"):
        return 0
    if word in ("on", "all"):
        return 100
    if not word.isdigit() or not 0 <= int(word) <= 100:
        raise ValueError(f"{text!r} is not a percentage (0-100) or `off`")
    return int(word)


def describe(percent: int) -> str:
    if percent == 0:
        return "realtime is OFF for everyone: all clients poll /notifications"
    if percent >= 100:
        return "realtime is on for everyone"
    return f"realtime is on for {percent}% of users (stable per user); the others poll"


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            if args.percent is None:
                print(f"rollout: {describe(rollout.read_percent(session))}")
                return 0
            try:
                percent = parse_percent(args.percent)
            except ValueError as exc:
                print(f"plantnotify rollout: {exc}", file=sys.stderr)
                return 2
            rollout.write_percent(session, percent)
        print(f"rollout: {describe(percent)}")
        print(
            f"clients switch within {settings.rollout_check_seconds:g} s "
            "(ROLLOUT_CHECK_SECONDS); no restart needed"
        )
        return 0
    finally:
        engine.dispose()
