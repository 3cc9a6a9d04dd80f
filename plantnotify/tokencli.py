"""``plantnotify token USER_ID [--ttl S] [--service] [--mosquitto-sub]``.

Prints an MQTT token for USER_ID (signed like every other MQTT token, through
``plantnotify.contracts.claims.mint_mqtt_token``), or a complete ``mosquitto_sub`` command that
subscribes to everything that user may read, against the broker ``plantnotify broker`` runs.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys

from plantnotify.broker.engines.nats.runtime import read_cluster_runtime
from plantnotify.broker.process import read_runtime
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.ids import is_valid_user_id, new_client_id
from plantnotify.contracts.topics import SERVICE_PREFIX, USERS, user_filter
from plantnotify.settings import ConfigError, Settings, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", metavar="USER_ID", help="the user id (token sub and username)")
    parser.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    parser.add_argument(
        "--service", action="store_true", help="role=service: may read and write every topic"
    )
    parser.add_argument(
        "--mosquitto-sub",
        action="store_true",
        help="print a whole mosquitto_sub command line instead of the bare token",
    )


def mosquitto_sub_command(settings: Settings, user_id: str, token: str, service: bool) -> str:
    host = settings.mqtt_public_host or settings.mqtt_host
    port = settings.mqtt_port
    if "mqtt_port" not in settings.model_fields_set:
        # `plantnotify broker` may have picked a free port because the default was taken.
        if settings.broker_engine == "nats":
            cluster = read_cluster_runtime(settings.nats_data_dir.resolve())
            if cluster:
                port = cluster["mqttPorts"][0]
        else:
            runtime = read_runtime(settings.mqtt_data_dir.resolve())
            if runtime:
                port = runtime["port"]
    client_id = new_client_id(user_id, f"sub-{secrets.token_hex(3)}")
    topics = [f"{USERS}/+/#", f"{SERVICE_PREFIX}/#"] if service else [user_filter(user_id)]
    parts = ["mosquitto_sub", "-h", host, "-p", str(port), "-u", user_id, "-P", token]
    parts += ["-i", client_id]
    for topic in topics:
        parts += ["-t", topic]
    version = "mqttv311" if settings.mqtt_protocol == 4 else "mqttv5"  # NATS: 3.1.1 only
    parts += ["-V", version, "-q", "1", "-v"]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    if not is_valid_user_id(args.user_id):
        print(
            f"plantnotify token: invalid user id {args.user_id!r}: use 1-64 of A-Z a-z 0-9 _ -",
            file=sys.stderr,
        )
        return 2
    try:
        settings = load_settings()
        default_ttl = (
            settings.service_token_ttl_seconds if args.service else settings.mqtt_token_ttl_seconds
        )
        ttl = args.ttl if args.ttl is not None else default_ttl
        if ttl <= 0:
            print("plantnotify token: --ttl must be a positive number of seconds", file=sys.stderr)
            return 2
        token = mint_mqtt_token(settings.mqtt_signer, args.user_id, ttl, service=args.service)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"plantnotify token: {exc}", file=sys.stderr)
        return 2
    if args.mosquitto_sub:
        print(mosquitto_sub_command(settings, args.user_id, token, args.service))
    else:
        print(token)
    return 0
