"""``plantnotify watch``: log in, follow your analyses live, send receipts (contract §7).

    plantnotify watch --api http://127.0.0.1:8000 --username alice --password ... \\
        [--device laptop] [--fcm-token TOKEN --platform android] [--json]

Credentials may come from PLANTNOTIFY_API, PLANTNOTIFY_USERNAME and PLANTNOTIFY_PASSWORD
instead (a password on the command line is visible to other local users in `ps`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from plantnotify.logs import setup_logging
from plantnotify.watch.api import ApiClient, WatchError
from plantnotify.watch.output import HumanLines, JsonLines, Output
from plantnotify.watch.watcher import Watcher, WatchOptions

DEFAULT_API = "http://127.0.0.1:8000"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "plantnotify" / "watch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api",
        default=os.environ.get("PLANTNOTIFY_API", DEFAULT_API),
        help=f"API base URL (env PLANTNOTIFY_API; default {DEFAULT_API})",
    )
    parser.add_argument(
        "--username",
        default=os.environ.get("PLANTNOTIFY_USERNAME"),
        help="(env PLANTNOTIFY_USERNAME)",
    )
    parser.add_argument(
        "--password",
        default=os.environ.get("PLANTNOTIFY_PASSWORD"),
        help="(env PLANTNOTIFY_PASSWORD, preferred: the command line shows in `ps`)",
    )
    parser.add_argument(
        "--device",
        default=os.environ.get("PLANTNOTIFY_DEVICE", "watch"),
        help="device name: the MQTT client id is <userId>-<device>, the same on every run, so "
        "the broker keeps this device's session (default: watch)",
    )
    parser.add_argument(
        "--session-expiry",
        type=int,
        default=86400,
        metavar="S",
        help="how long the broker keeps queuing events for this device while it is away",
    )
    parser.add_argument("--fcm-token", help="register this FCM token for the user (POST /devices)")
    parser.add_argument(
        "--platform", choices=["android", "ios", "web"], default="android", help="of --fcm-token"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"where seen event ids are kept between runs (default {default_state_dir()})",
    )
    parser.add_argument("--mqtt-host", help="override the broker host the API announces")
    parser.add_argument("--mqtt-port", type=int, help="override the broker port the API announces")
    parser.add_argument(
        "--count", type=int, metavar="N", help="exit after N new Completed/Failed events"
    )
    parser.add_argument("--duration", type=float, metavar="S", help="exit after S seconds")
    parser.add_argument("-v", "--verbose", action="store_true", help="log connection details")


def run(args: argparse.Namespace) -> int:
    # Logs go to stderr (stdout is the event stream); quiet unless -v.
    setup_logging(service="watch")
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    if not args.username or not args.password:
        print(
            "plantnotify watch: give --username and --password "
            "(or PLANTNOTIFY_USERNAME and PLANTNOTIFY_PASSWORD)",
            file=sys.stderr,
        )
        return 2
    output: Output = JsonLines() if args.json else HumanLines()
    api = ApiClient(args.api, args.username, args.password)
    watcher = Watcher(
        api,
        output,
        WatchOptions(
            device=args.device,
            session_expiry=args.session_expiry,
            fcm_token=args.fcm_token,
            platform=args.platform,
            state_dir=args.state_dir or default_state_dir(),
            mqtt_host=args.mqtt_host,
            mqtt_port=args.mqtt_port,
            max_events=args.count,
            duration=args.duration,
        ),
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        watcher.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        watcher.prepare()
        return watcher.run()
    except WatchError as exc:
        print(f"plantnotify watch: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        api.close()
