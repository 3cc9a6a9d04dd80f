"""Who is online, as the broker tells it: the presence-source interface and the Mosquitto one.

A presence source answers ``live(user_id)`` (``None`` while not in sync: unknown) and turns what
arrives in the bridge loop's inbox into a :class:`PresenceUpdate` (users who went offline, and
whether that put it in sync). Two implementations, one per engine:

* :class:`BrokerPresence` (Mosquitto): the plugin's session changes (every TICK's snapshots in
  one message) and broker boots on the bridge's MQTT connection; after subscribing it asks the
  plugin for the whole
  picture (``$CONTROL/plantnotify/sessions``), which comes back to this client alone in a few
  numbered parts: in sync once every part of the answer to its own request is in; the picture
  itself (:class:`bridge.sessions.SessionPicture`) is pure;
* :class:`bridge.presence_nats.NatsPresence` (NATS): ``$SYS`` connect/disconnect events and
  CONNZ snapshots from every node, on a system-user connection of its own.

Confined to the bridge's loop thread (a source's own I/O thread only posts to the inbox).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from bridge import metrics
from bridge.sessions import SessionPicture
from plantnotify.contracts.events import (
    BrokerBoot,
    SessionChanges,
    SessionSnapshot,
    SessionsPicture,
)
from plantnotify.contracts.topics import (
    BROKER_BOOT_TOPIC,
    BROKER_SESSION_CHANGES_TOPIC,
    BROKER_SESSIONS_TOPIC,
    SESSIONS_REQUEST_TOPIC,
    parse_topic,
)
from plantnotify.mqtt import ConnectionState, Message, MqttClient, MqttError

log = logging.getLogger("plantnotify.bridge")

# No complete answer to a picture request within this: ask again (a part lost, a busy broker).
PICTURE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class PresenceUpdate:
    """What one presence message changed: users now offline, and whether it put us in sync."""

    offline: tuple[str, ...] = ()
    synced: bool = False


class PresenceSource(Protocol):
    """What the bridge needs from presence, whatever the engine."""

    ready: threading.Event  # set by the loop once in sync

    def live(self, user_id: str) -> int | None: ...

    def route(self, msg: Message) -> PresenceUpdate | None:
        """A presence message applied; None when ``msg`` is not one (receipts, events)."""
        ...

    def connection_changed(self, state: ConnectionState | None) -> None: ...

    def sync_step(self) -> bool:
        """Called every loop pass; True when it just put the source in sync."""
        ...

    @property
    def wants_wake(self) -> float | None:
        """How soon the loop should wake for this source (None: no hurry)."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def broker_presence_filters(sync_topic: str) -> list[tuple[str, int]]:
    """What :class:`BrokerPresence` needs on the bridge's MQTT connection: the changes, not the
    per-user topics (one message per user overflowed the bridge's queue in a mass disconnect).
    The picture parts are sent to this client alone: no subscription; ``sync_topic`` is no
    longer needed."""
    del sync_topic
    return [(BROKER_BOOT_TOPIC, 1), (BROKER_SESSION_CHANGES_TOPIC, 1)]


class BrokerPresence:
    def __init__(self, mqtt: MqttClient, sync_topic: str) -> None:
        self.picture = SessionPicture()
        self.sync_topic = sync_topic  # kept for callers; the picture request replaced its marker
        self.ready = threading.Event()  # set by the loop once in sync (and caught up)
        self._mqtt = mqtt
        self._wanted = False
        self._request: str | None = None
        self._sent_at = 0.0
        self._parts: dict[int, SessionsPicture] = {}

    def live(self, user_id: str) -> int | None:
        """Live connections of the user; ``None`` while not in sync (unknown)."""
        return self.picture.live(user_id)

    def route(self, msg: Message) -> PresenceUpdate | None:
        if msg.topic == BROKER_SESSIONS_TOPIC:
            return self.picture_part(msg.payload)
        if msg.topic == BROKER_SESSION_CHANGES_TOPIC:
            return self.changes(msg.payload)
        if msg.topic == BROKER_BOOT_TOPIC:
            self.boot(msg.payload)
            return PresenceUpdate()
        ref = parse_topic(msg.topic)
        if ref is None or ref.kind != "session":
            return None
        went_offline = self.snapshot(ref.user_id, msg.payload)
        return PresenceUpdate(offline=(ref.user_id,) if went_offline else ())

    @property
    def wants_wake(self) -> float | None:
        if self.request_due:
            return 0.02
        if self.request_out:
            return 0.1
        return None

    def start(self) -> None:
        """Nothing to start: it reads the bridge's own MQTT connection."""

    def stop(self) -> None:
        """Nothing to stop."""

    @property
    def request_due(self) -> bool:
        """Connected and subscribed, the picture not yet asked for."""
        return self._wanted and self._request is None

    @property
    def request_out(self) -> bool:
        """The picture was asked for and has not come back whole yet."""
        return self._request is not None

    # --- what the broker tells ----------------------------------------------------------------

    def connection_changed(self, state: ConnectionState | None) -> None:
        if state is ConnectionState.CONNECTED:
            log.info("connected to the broker; rebuilding the session picture")
            self.picture.reset()
            self._wanted = True
            self._request = None
            self._parts.clear()
        elif state is ConnectionState.DISCONNECTED:
            if self.picture.known:
                log.warning("lost the broker; forgetting who is online until reconnected")
            self.picture.reset()
            self._wanted = False
            self._request = None
            self._parts.clear()
            self.ready.clear()
            self.update_gauges()

    def boot(self, payload: bytes) -> None:
        try:
            boot = BrokerBoot.model_validate_json(payload)
        except ValueError:
            log.warning("malformed broker boot message ignored")
            return
        if self.picture.on_boot(boot):
            log.info("broker boot %s", boot.boot_id)
            self.update_gauges()

    def snapshot(self, user_id: str, payload: bytes) -> bool:
        """Apply a session snapshot; True when it shows the user going offline. An empty
        payload is the deletion of a retained snapshot left by an earlier plugin version (the
        plugin never sends one now): nothing to apply."""
        if not payload:
            return False
        try:
            snap = SessionSnapshot.model_validate_json(payload)
        except ValueError:
            log.warning("malformed session snapshot ignored", extra={"user_id": user_id})
            return False
        if snap.user_id != user_id:
            log.warning("session snapshot on another user's topic ignored")
            return False
        went_offline = self.picture.on_snapshot(snap)
        self.update_gauges()
        return went_offline

    def changes(self, payload: bytes) -> PresenceUpdate:
        """One TICK's snapshots, oldest first."""
        try:
            changes = SessionChanges.model_validate_json(payload)
        except ValueError:
            log.warning("malformed session changes ignored")
            return PresenceUpdate()
        gone = [s.user_id for s in changes.sessions if self.picture.on_snapshot(s)]
        self.update_gauges()
        return PresenceUpdate(offline=tuple(gone))

    # --- being in sync --------------------------------------------------------------------------

    def picture_part(self, payload: bytes) -> PresenceUpdate:
        """One part of the whole picture; in sync when the last part of our request is in."""
        try:
            part = SessionsPicture.model_validate_json(payload)
        except ValueError:
            log.warning("malformed sessions picture part ignored")
            return PresenceUpdate()
        if self._request is None or part.request_id != self._request or part.part > part.parts:
            return PresenceUpdate()  # an answer to an earlier request (or to another bridge)
        if self._parts and next(iter(self._parts.values())).parts != part.parts:
            return PresenceUpdate()
        self._parts[part.part] = part
        if len(self._parts) < part.parts:
            return PresenceUpdate()
        sessions = [s for p in sorted(self._parts) for s in self._parts[p].sessions]
        gone = self.picture.on_picture(part.boot_id, part.seq, part.at, sessions)
        self._in_sync()
        return PresenceUpdate(offline=gone, synced=True)

    def sync_step(self) -> bool:
        """Once subscribed, ask the plugin for the whole picture; snapshots published after it
        reach us on the subscription, so nothing falls between the two. Ask again when no
        complete answer came in time. Never puts the source in sync by itself (the last part
        does, in :meth:`route`)."""
        if self.request_due or (
            self.request_out and time.monotonic() - self._sent_at > PICTURE_TIMEOUT_SECONDS
        ):
            if self.request_out:
                log.warning(
                    "the sessions picture did not come back whole in %.0f s; asking again",
                    PICTURE_TIMEOUT_SECONDS,
                )
            try:
                self._mqtt.wait_connected(timeout=0)
                request = secrets.token_hex(8)
                self._parts.clear()
                self._mqtt.publish(SESSIONS_REQUEST_TOPIC, request.encode(), qos=1)
            except MqttError:
                self._request = None
                return False
            self._request = request
            self._sent_at = time.monotonic()
        return False

    def _in_sync(self) -> None:
        self._wanted = False
        self._request = None
        self._parts.clear()
        self.picture.mark_synced()
        totals = self.picture.totals()
        log.info(
            "session picture in sync",
            extra={"boot_id": self.picture.boot_id, "live_users": totals.users},
        )
        self.update_gauges()

    def update_gauges(self) -> None:
        totals = self.picture.totals()
        metrics.LIVE_SESSIONS.set(totals.connections)
        metrics.LIVE_USERS.set(totals.users)
        metrics.IN_SYNC.set(1 if self.picture.known else 0)
