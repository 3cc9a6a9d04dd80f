"""The device loop: one persistent MQTT session, events handled on the caller's thread.

The MQTT client's thread only hands messages and state changes over (a queue); this loop
parses, de-duplicates, prints, sends receipts and recovers missed events. Receipts that could
not be acknowledged (the connection dropped) are sent again after the next connect.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from plantnotify.contracts.events import (
    AnalysisCompleted,
    AnalysisFailed,
    InvalidPayload,
    Receipt,
    Transport,
    parse_event,
)
from plantnotify.contracts.ids import new_client_id
from plantnotify.contracts.topics import parse_topic
from plantnotify.mqtt import (
    ConnectionState,
    ConnectOptions,
    Credentials,
    Message,
    MqttClient,
    MqttError,
    MqttTimeout,
)
from plantnotify.mqtt.client import PublishHandle
from plantnotify.watch.api import ApiClient, RealtimeGrant, WatchError
from plantnotify.watch.output import AnyEvent, Output
from plantnotify.watch.seen import SeenStore

log = logging.getLogger("plantnotify.watch")

# Ask /notifications for a little more than strictly missed: commit order and clocks are not
# exact, and eventId de-duplication makes the overlap free.
RECOVERY_OVERLAP = timedelta(minutes=5)


@dataclass(slots=True)
class WatchOptions:
    device: str = "watch"
    session_expiry: int = 86400  # seconds the broker keeps the session while we're away
    fcm_token: str | None = None
    platform: str = "android"
    state_dir: Path | None = None
    mqtt_host: str | None = None  # override what the API says (e.g. through a tunnel)
    mqtt_port: int | None = None
    max_events: int | None = None  # stop after this many new Completed/Failed events
    duration: float | None = None  # stop after this many seconds
    recover: bool = True


def refresh_margin(ttl: int) -> float:
    """Reconnect with a new token this long before the old one expires."""
    return max(1.0, min(30.0, ttl * 0.2))


class Watcher:
    def __init__(self, api: ApiClient, output: Output, options: WatchOptions) -> None:
        self.api = api
        self.out = output
        self.opts = options
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._grant_lock = threading.Lock()
        self._grant: RealtimeGrant | None = None
        self._receipts: dict[str, PublishHandle | None] = {}
        self._received_at: dict[str, int] = {}  # eventId -> ms since the epoch, for receipts
        self.client: MqttClient | None = None
        self.user_id = ""
        self.client_id = ""
        self.seen = SeenStore(None)
        self.stats = {"events": 0, "duplicates": 0, "receipts": 0, "connects": 0, "tokens": 0}
        self.terminal_events = 0

    # --- set-up ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Log in, register the FCM token, get the first realtime token. Raises WatchError."""
        login = self.api.log_in()
        self.user_id = login.user_id
        try:
            self.client_id = new_client_id(self.user_id, self.opts.device)
        except ValueError:
            raise WatchError(
                f"--device {self.opts.device!r} is not usable in an MQTT client id: use letters, "
                "digits and _ . : - (at most 64)"
            ) from None
        if self.opts.fcm_token:
            self.api.register_device(self.opts.fcm_token, self.opts.platform)
            self.out.status("device-registered", platform=self.opts.platform)
        grant = self._fetch_grant()
        state_file = self.opts.state_dir / f"{self.client_id}.json" if self.opts.state_dir else None
        self.seen = SeenStore(state_file)
        options = ConnectOptions(
            host=self.opts.mqtt_host or grant.host,
            port=self.opts.mqtt_port or grant.port,
            client_id=self.client_id,
            credentials=self._credentials,
            protocol=4 if grant.protocol_version == 4 else 5,
            clean_start=False,  # resume the session: what came while we were away is queued
            session_expiry=self.opts.session_expiry,
            subscriptions=[(grant.analyses_filter, 1)],
            refresh_margin=refresh_margin(grant.ttl),
        )
        self.client = MqttClient(
            options,
            on_message=lambda m: self._inbox.put(("message", m)),
            on_state=lambda s: self._inbox.put(("state", s)),
        )

    def _fetch_grant(self) -> RealtimeGrant:
        grant = self.api.realtime_grant()
        self._grant = grant
        self.stats["tokens"] += 1
        return grant

    def _credentials(self) -> Credentials:
        """Called by the MQTT thread before every connect: a token that is not about to end."""
        with self._grant_lock:
            grant = self._grant
            assert grant is not None
            # A little earlier than the client's own margin, so its planned reconnect always
            # finds a fresh token here.
            if time.time() >= grant.expires_at - refresh_margin(grant.ttl) - 2:
                try:
                    grant = self._fetch_grant()
                except WatchError as exc:
                    # Keep the old one: the broker refuses it if expired and the client's
                    # loop retries with back-off, calling us again.
                    log.warning("could not renew the realtime token: %s", exc)
            return Credentials(grant.username, grant.token, expires_at=grant.expires_at)

    # --- the loop -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(("stop", None))

    def run(self) -> int:
        if self.client is None:
            self.prepare()
        assert self.client is not None
        deadline = time.monotonic() + self.opts.duration if self.opts.duration else None
        self.client.start()
        try:
            while not self._stop.is_set():
                timeout = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
                if deadline is not None and timeout == 0:
                    break
                try:
                    kind, item = self._inbox.get(timeout=min(timeout, 0.5))
                except queue.Empty:
                    self._retry_receipts()
                    continue
                if kind == "message":
                    self._on_message(item)
                elif kind == "state":
                    self._on_state(item)
                if self.opts.max_events and self.terminal_events >= self.opts.max_events:
                    self._drain_receipts(timeout=5.0)
                    break
        finally:
            self.client.stop()
            self.seen.save()
        return 0

    def _on_state(self, state: ConnectionState) -> None:
        if state is ConnectionState.CONNECTED:
            self.stats["connects"] += 1
            self.out.status("connected", clientId=self.client_id, session="persistent")
            self._retry_receipts()
            if self.opts.recover:
                self._recover()
        elif state is ConnectionState.DISCONNECTED and not self._stop.is_set():
            # The client's loop reconnects by itself (after a planned token renewal at once).
            error = self.client.last_error if self.client else None
            self.out.status("reconnecting", reason=str(error) if error else None)

    def _on_message(self, message: Message) -> None:
        if not message.payload:
            return  # a cleared retained message
        ref = parse_topic(message.topic)
        if ref is None or ref.kind != "analysis" or ref.user_id != self.user_id:
            log.warning("ignoring a message on an unexpected topic")
            return
        try:
            event = parse_event(message.payload)
        except InvalidPayload as exc:
            log.warning("ignoring a payload that is not an event: %s", exc)
            return
        self._handle(event, "retained" if message.retain else "live")

    def _handle(self, event: AnyEvent, source: str) -> None:
        if event.user_id != self.user_id:
            return
        # A receipt for every copy we get is cheap, and the first one may have been lost.
        self._send_receipt(event.event_id)
        if not self.seen.add(event.event_id, _event_time(event)):
            self.stats["duplicates"] += 1
            return
        self.stats["events"] += 1
        self.out.event(event, source)
        self.seen.save()
        if isinstance(event, AnalysisCompleted | AnalysisFailed):
            self.terminal_events += 1

    def _recover(self) -> None:
        cursor = self.seen.cursor
        if cursor is None:
            return  # first run: the retained events are the current state; nothing "missed"
        since = (cursor - RECOVERY_OVERLAP).isoformat()
        try:
            items = self.api.notifications_since(since)
        except WatchError as exc:
            log.warning("missed-event recovery failed (retained events still apply): %s", exc)
            return
        for item in items:
            try:
                event = parse_event(item)
            except InvalidPayload:
                continue
            self._handle(event, "recovered")

    # --- receipts -------------------------------------------------------------------------

    def _send_receipt(self, event_id: str) -> None:
        if event_id in self._receipts and self._receipts[event_id] is not None:
            return  # already on its way; _retry_receipts resends it if that copy is lost
        self._receipts[event_id] = None
        self._received_at.setdefault(event_id, int(time.time() * 1000))
        self._publish_receipt(event_id)

    def _publish_receipt(self, event_id: str) -> None:
        grant = self._grant
        if self.client is None or grant is None:
            return
        try:
            receipt = Receipt(
                event_id=event_id,
                received_at=self._received_at.get(event_id),
                transport=Transport.TCP,
                client_id=self.client_id,
            )
            handle = self.client.publish(grant.receipts_topic, receipt.to_json_bytes(), qos=1)
        except MqttError:
            return  # not connected: sent after the next connect
        self._receipts[event_id] = handle

    def _retry_receipts(self) -> None:
        for event_id, handle in list(self._receipts.items()):
            if handle is None:
                self._publish_receipt(event_id)
                continue
            try:
                handle.wait(0)
            except MqttTimeout:
                continue  # PUBACK not here yet
            except MqttError:
                self._receipts[event_id] = None  # lost with the connection: send again
                self._publish_receipt(event_id)
                continue
            del self._receipts[event_id]
            self._received_at.pop(event_id, None)
            self.stats["receipts"] += 1

    def _drain_receipts(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while self._receipts and time.monotonic() < end:
            self._retry_receipts()
            time.sleep(0.02)


def _event_time(event: AnyEvent) -> datetime | None:
    if isinstance(event, AnalysisCompleted):
        return event.completed_at
    if isinstance(event, AnalysisFailed):
        return event.failed_at
    return None
