"""MQTT topic builders and parsers: the only place topic strings are spelled.

User topics (contract §2):
    users/{userId}/analyses/{analysisId}   server -> client, retained QoS 1 events
    users/{userId}/receipts                client -> server, QoS 1 {"eventId": ...}

Service topics (written by the Mosquitto plugin, readable only with role=service):
    plantnotify/broker/boot                retained BrokerBoot, one per broker start
    plantnotify/broker/stats               retained BrokerStats (CONNECT outcomes, live count)
    $CONTROL/plantnotify/revocations       revocation lines, published by the API's feed to
                                           the plugin (never retained)
    plantnotify/broker/revocations/resync  a BrokerBoot from an auth callout of the NATS engine
                                           (not retained): the API's feed re-sends every
                                           revocation in force, then SYNC <bootId>
    plantnotify/sessions/{userId}          SessionSnapshot when a user's live connections change
                                           (not retained; retained ones are leftovers of
                                           earlier versions)
    $CONTROL/plantnotify/sessions          a service asks for the whole picture (payload: its
                                           request id; never retained)
    plantnotify/broker/sessions            the SessionsPicture parts, sent to the asking client
                                           only
    plantnotify/broker/session-changes     SessionChanges: one TICK's SessionSnapshots in one
                                           message (not retained; what the bridge follows)
    plantnotify/broker/persistent-sessions PersistentSessionOpened: a user's CONNECT without a
                                           clean start (QoS 1, never retained; the API caps
                                           persistent sessions per user with them)
    plantnotify/bridges/{clientId}/sync    a bridge's own topic (reserved; earlier versions
                                           published a sync marker to themselves there)
The plugin spells the service topics in C (mosquitto/plugin/plantnotify_plugin.c); the broker
tests check both sides agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantnotify.contracts.ids import is_valid_user_id

USERS = "users"
ANALYSES = "analyses"
RECEIPTS = "receipts"

SERVICE_PREFIX = "plantnotify"
BROKER_BOOT_TOPIC = f"{SERVICE_PREFIX}/broker/boot"
BROKER_STATS_TOPIC = f"{SERVICE_PREFIX}/broker/stats"
BROKER_PERSISTENT_SESSIONS_TOPIC = f"{SERVICE_PREFIX}/broker/persistent-sessions"
# Revocation lines from the API's feed to the plugin (api/revocation_feed.py).
BROKER_REVOCATIONS_TOPIC = "$CONTROL/plantnotify/revocations"
# An auth callout (NATS engine) asking the feed for every revocation in force.
BROKER_REVOCATIONS_RESYNC_TOPIC = f"{SERVICE_PREFIX}/broker/revocations/resync"
SESSIONS = "sessions"
# A service asks the plugin for every online user (payload: a request id); the parts come
# back on BROKER_SESSIONS_TOPIC to that client alone.
SESSIONS_REQUEST_TOPIC = "$CONTROL/plantnotify/sessions"
BROKER_SESSIONS_TOPIC = f"{SERVICE_PREFIX}/broker/sessions"
# Every snapshot of one plugin TICK in one message: a mass disconnect is a few dozen messages
# for the bridge instead of one per user (which overflowed a subscriber's queue).
BROKER_SESSION_CHANGES_TOPIC = f"{SERVICE_PREFIX}/broker/session-changes"
ALL_SESSIONS_FILTER = f"{SERVICE_PREFIX}/{SESSIONS}/+"
BRIDGES = "bridges"

ALL_ANALYSES_FILTER = f"{USERS}/+/{ANALYSES}/+"
ALL_RECEIPTS_FILTER = f"{USERS}/+/{RECEIPTS}"


def _check_user(user_id: str) -> None:
    if not is_valid_user_id(user_id):
        raise ValueError(f"invalid user id {user_id!r}")


def user_root(user_id: str) -> str:
    """``users/{userId}`` (no trailing slash)."""
    _check_user(user_id)
    return f"{USERS}/{user_id}"


def user_filter(user_id: str) -> str:
    """Everything of one user: ``users/{userId}/#``."""
    return f"{user_root(user_id)}/#"


def analyses_filter(user_id: str) -> str:
    """All analysis events of one user: ``users/{userId}/analyses/+``."""
    return f"{user_root(user_id)}/{ANALYSES}/+"


def analysis_topic(user_id: str, analysis_id: str) -> str:
    if not analysis_id or any(c in analysis_id for c in "/+#\x00"):
        raise ValueError(f"invalid analysis id {analysis_id!r}")
    return f"{user_root(user_id)}/{ANALYSES}/{analysis_id}"


def receipts_topic(user_id: str) -> str:
    return f"{user_root(user_id)}/{RECEIPTS}"


def session_topic(user_id: str) -> str:
    _check_user(user_id)
    return f"{SERVICE_PREFIX}/{SESSIONS}/{user_id}"


def bridge_sync_topic(client_id: str) -> str:
    if not client_id or any(c in client_id for c in "/+#\x00"):
        raise ValueError(f"invalid client id {client_id!r}")
    return f"{SERVICE_PREFIX}/{BRIDGES}/{client_id}/sync"


@dataclass(frozen=True, slots=True)
class TopicRef:
    """What a topic names. ``kind`` is ``analysis``, ``receipts`` or ``session``."""

    kind: str
    user_id: str
    analysis_id: str | None = None


def parse_topic(topic: str) -> TopicRef | None:
    """Classify a topic of ours; ``None`` for anything else (never raises)."""
    match topic.split("/"):
        case [prefix, uid, kind, aid] if prefix == USERS and kind == ANALYSES and aid:
            ref = TopicRef("analysis", uid, aid)
        case [prefix, uid, kind] if prefix == USERS and kind == RECEIPTS:
            ref = TopicRef("receipts", uid)
        case [prefix, kind, uid] if prefix == SERVICE_PREFIX and kind == SESSIONS:
            ref = TopicRef("session", uid)
        case _:
            return None
    return ref if is_valid_user_id(ref.user_id) else None
