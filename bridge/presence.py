"""Who is online, as the broker tells it: the presence-source interface and the Mosquitto one.

A presence source answers ``live(user_id)`` (``None`` while not in sync: unknown) and turns what
arrives in the bridge loop's inbox into a :class:`PresenceUpdate` (users who went offline, and
whether that put it in sync). Two implementations, one per engine:

* :class:`BrokerPresence` (Mosquitto): the plugin's retained per-user session snapshots and
  broker boots on the bridge's MQTT connection, and the sync marker that says the retained
  replay has been read to its end; the picture itself (:class:`bridge.sessions.SessionPicture`)
  is pure;
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
from plantnotify.contracts.events import BrokerBoot, SessionSnapshot
from plantnotify.contracts.topics import ALL_SESSIONS_FILTER, BROKER_BOOT_TOPIC, parse_topic
from plantnotify.mqtt import ConnectionState, Message, MqttClient, MqttError

log = logging.getLogger("plantnotify.bridge")

SYNC_FALLBACK_SECONDS = 5.0  # if our own sync marker never comes back, trust the replay anyway


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
    """What :class:`BrokerPresence` needs on the bridge's MQTT connection."""
    return [(BROKER_BOOT_TOPIC, 1), (ALL_SESSIONS_FILTER, 1), (sync_topic, 1)]


class BrokerPresence:
    def __init__(self, mqtt: MqttClient, sync_topic: str) -> None:
        self.picture = SessionPicture()
        self.sync_topic = sync_topic
        self.ready = threading.Event()  # set by the loop once in sync (and caught up)
        self._mqtt = mqtt
        self._wanted = False
        self._nonce: str | None = None
        self._sent_at = 0.0

    def live(self, user_id: str) -> int | None:
        """Live connections of the user; ``None`` while not in sync (unknown)."""
        return self.picture.live(user_id)

    def route(self, msg: Message) -> PresenceUpdate | None:
        if msg.topic == self.sync_topic:
            return PresenceUpdate(synced=self.marker(msg.payload))
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
        if self.marker_due:
            return 0.02
        if self.marker_out:
            return 0.1
        return None

    def start(self) -> None:
        """Nothing to start: it reads the bridge's own MQTT connection."""

    def stop(self) -> None:
        """Nothing to stop."""

    @property
    def marker_due(self) -> bool:
        """Connected and subscribed, the sync marker not yet published."""
        return self._wanted and self._nonce is None

    @property
    def marker_out(self) -> bool:
        """The sync marker is on its way back to us."""
        return self._nonce is not None

    # --- what the broker tells ----------------------------------------------------------------

    def connection_changed(self, state: ConnectionState | None) -> None:
        if state is ConnectionState.CONNECTED:
            log.info("connected to the broker; rebuilding the session picture")
            self.picture.reset()
            self._wanted = True
            self._nonce = None
        elif state is ConnectionState.DISCONNECTED:
            if self.picture.known:
                log.warning("lost the broker; forgetting who is online until reconnected")
            self.picture.reset()
            self._wanted = False
            self._nonce = None
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
        payload is the deletion of the user's retained snapshot: offline too."""
        if not payload:
            went_offline = self.picture.on_deleted(user_id)
            self.update_gauges()
            return went_offline
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

    # --- being in sync --------------------------------------------------------------------------

    def marker(self, payload: bytes) -> bool:
        """Our sync marker came back; True when that puts us in sync."""
        if self._nonce is None or payload != self._nonce.encode():
            return False
        self._in_sync()
        return True

    def sync_step(self) -> bool:
        """After SUBACK, publish a marker to ourselves: when it comes back, the retained replay
        (boot + every session snapshot) queued before it has been read. True when a marker that
        never came back made us trust the replay read so far."""
        if self.marker_due:
            try:
                self._mqtt.wait_connected(timeout=0)
                self._nonce = secrets.token_hex(8)
                self._sent_at = time.monotonic()
                self._mqtt.publish(self.sync_topic, self._nonce.encode(), qos=1)
            except MqttError:
                self._nonce = None
                return False
        if self._nonce is not None and time.monotonic() - self._sent_at > SYNC_FALLBACK_SECONDS:
            log.warning("sync marker did not come back; trusting the replay read so far")
            self._in_sync()
            return True
        return False

    def _in_sync(self) -> None:
        self._wanted = False
        self._nonce = None
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
