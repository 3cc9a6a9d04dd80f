"""Identifier rules shared by the API, the services and the Mosquitto plugin.

The plugin (mosquitto/plugin/token.c) enforces the same rules in C; tests check both agree.
"""

from __future__ import annotations

import re
import secrets

USER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
USER_ID_RE = re.compile(USER_ID_PATTERN)

# A client id is the user id, or "<userId>-<suffix>" with a suffix from a safe charset.
# The contract only says "starts with <userId>-"; the suffix charset is our own hardening
# (client ids appear in log lines and session snapshots, so no '/', '+', '#', spaces or NUL).
CLIENT_ID_SUFFIX_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
CLIENT_ID_SUFFIX_RE = re.compile(CLIENT_ID_SUFFIX_PATTERN)


def is_valid_user_id(user_id: str) -> bool:
    return bool(USER_ID_RE.fullmatch(user_id))


def client_id_prefix(user_id: str) -> str:
    """The prefix every MQTT client id of this user must start with (or equal, minus '-')."""
    return f"{user_id}-"


def is_valid_client_id(user_id: str, client_id: str) -> bool:
    if client_id == user_id:
        return True
    prefix = client_id_prefix(user_id)
    if not client_id.startswith(prefix):
        return False
    return bool(CLIENT_ID_SUFFIX_RE.fullmatch(client_id[len(prefix) :]))


def new_client_id(user_id: str, device: str | None = None) -> str:
    """A client id for ``user_id``; stable when ``device`` is given, random otherwise."""
    suffix = device if device else secrets.token_hex(4)
    client_id = f"{client_id_prefix(user_id)}{suffix}"
    if not is_valid_client_id(user_id, client_id):
        raise ValueError(f"device name {device!r} is not allowed in an MQTT client id")
    return client_id


def new_user_id() -> str:
    """Short, unguessable, topic-safe user id for locally registered accounts."""
    return "u" + secrets.token_hex(6)
