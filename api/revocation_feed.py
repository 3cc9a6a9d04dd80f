"""Pushes revocations from the database (the source of truth) to the broker's plugin.

Each API process runs one feed (a thread with a service MQTT connection, user ``svc-api``):

- rows of ``revocations`` created lately are published as soon as a request commits one
  (``AppState.revocations_changed``) and on a short poll, so a revocation made by another API
  replica reaches the broker within ``FEED_POLL_SECONDS`` even if that replica's connection is
  down; a row is sent once per boot by each replica (duplicates are harmless);
- after every broker boot (a new ``bootId`` on ``plantnotify/broker/boot``) every row still in
  force is published again, then a ``SYNC <bootId>`` line: a restarted broker forgets nothing
  for longer than it takes a feed to notice the boot. On the NATS engine the auth callouts
  decide CONNECTs: each one that starts asks on ``plantnotify/broker/revocations/resync`` (a
  ``BrokerBoot``, repeated until its SYNC came), which the feed treats as a boot.

Wire format (topic ``$CONTROL/plantnotify/revocations``: Mosquitto hands it to the plugin and
to no subscriber; QoS 1, never retained, service role
only; the plugin applies lines from service connections and ignores everything else), one
revocation per line, at most ``MAX_LINES_PER_MESSAGE`` lines per message::

    S <userId> <sessionId> <until>      tokens with this sid (sessions) are refused
    U <userId> <notBefore> <until>      tokens of this user with iat < notBefore are refused
    SYNC <bootId>                       every revocation in force has been sent to this boot

``until`` and ``notBefore`` are unix seconds; the broker forgets a line after ``until``.
The plugin disconnects the user's live connections when a line names them (within one TICK);
the connections whose tokens were not revoked reconnect at once.

Retained topics of deleted accounts (``retained_clears``) get an empty retained publish at
once, again a little later, and after every broker boot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from api import store
from plantnotify.contracts import topics
from plantnotify.contracts.events import BrokerBoot
from plantnotify.db.models import Revocation
from plantnotify.logs import get_logger
from plantnotify.mqtt import Message, MqttClient, MqttError
from plantnotify.service_mqtt import service_connect_options
from plantnotify.settings import Settings

log = get_logger("plantnotify.api.revocations")

FEED_POLL_SECONDS = 1.0
RECENT_WINDOW_SECONDS = 120.0  # longer than any transaction that inserts a revocation
MAX_LINES_PER_MESSAGE = 500
PUBLISH_TIMEOUT_SECONDS = 5.0
CLEAR_AGAIN_SECONDS = 15.0


def revocation_line(row: Revocation) -> str:
    until = int(row.expires_at.timestamp())
    if row.session_id:
        return f"S {row.user_id} {row.session_id} {until}"
    assert row.not_before is not None
    return f"U {row.user_id} {int(row.not_before.timestamp())} {until}"


def batches(lines: Iterable[str], size: int = MAX_LINES_PER_MESSAGE) -> Iterable[bytes]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield ("\n".join(chunk) + "\n").encode()
            chunk = []
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()


class RevocationFeed:
    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], wakeup: threading.Event
    ) -> None:
        self._sessions = sessions
        self._wakeup = wakeup
        self._stop = threading.Event()
        self._boot_lock = threading.Lock()
        self._seen_boot: str | None = None
        self._synced_boot: str | None = None
        self._sent: dict[int, float] = {}  # seq -> when (monotonic), recent rows only
        self._cleared: dict[str, tuple[int, float]] = {}  # topic -> (times sent, last)
        self._client = MqttClient(
            service_connect_options(
                settings,
                "api",
                subscriptions=[
                    (topics.BROKER_BOOT_TOPIC, 1),
                    (topics.BROKER_REVOCATIONS_RESYNC_TOPIC, 1),
                ],
            ),
            on_message=self._on_message,
        )
        self._thread = threading.Thread(target=self._run, name="revocation-feed", daemon=True)

    def start(self) -> RevocationFeed:
        self._client.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()
        self._thread.join(5)
        self._client.stop()

    @property
    def synced_boot(self) -> str | None:
        return self._synced_boot

    # --- MQTT thread -----------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        if message.topic not in (
            topics.BROKER_BOOT_TOPIC,
            topics.BROKER_REVOCATIONS_RESYNC_TOPIC,
        ):
            return
        try:
            boot = BrokerBoot.model_validate_json(message.payload)
        except ValueError:
            log.warning("ignoring a malformed broker boot message")
            return
        with self._boot_lock:
            self._seen_boot = boot.boot_id
        self._wakeup.set()

    # --- feed thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wakeup.wait(FEED_POLL_SECONDS)
            self._wakeup.clear()
            if self._stop.is_set():
                return
            if not self._client.is_connected:
                continue
            try:
                self._step()
            except MqttError as exc:
                log.info("revocations not pushed yet (broker): %s", exc)
            except Exception:  # a database hiccup: the next poll retries
                log.exception("revocation feed step failed")

    def _step(self) -> None:
        with self._boot_lock:
            boot = self._seen_boot
        if boot is not None and boot != self._synced_boot:
            self._full_sync(boot)
            return
        now = datetime.now(UTC)
        since = now - timedelta(seconds=RECENT_WINDOW_SECONDS)
        with self._sessions() as db:
            rows = store.revocations_since(db, since, now)
            clears = store.retained_clears_since(db, since)
        fresh = [r for r in rows if r.seq not in self._sent]
        if fresh:
            self._publish(revocation_line(r) for r in fresh)
            mark = time.monotonic()
            for r in fresh:
                self._sent[r.seq] = mark
        self._clear_recent(clears)
        cutoff = time.monotonic() - 2 * RECENT_WINDOW_SECONDS
        for seq in [s for s, at in self._sent.items() if at < cutoff]:
            del self._sent[seq]
        for topic in [t for t, (_, at) in self._cleared.items() if at < cutoff]:
            del self._cleared[topic]

    def _clear_recent(self, clear_topics: list[str]) -> None:
        """Empty retained publishes for a deleted account's topics: once at once, and once more
        ``CLEAR_AGAIN_SECONDS`` later (an outbox batch read before the deletion may still have
        landed an event in between)."""
        now = time.monotonic()
        due = []
        for topic in clear_topics:
            count, at = self._cleared.get(topic, (0, 0.0))
            if count == 0 or (count == 1 and now - at >= CLEAR_AGAIN_SECONDS):
                due.append(topic)
                self._cleared[topic] = (count + 1, now)
        self._clear(due)

    def _clear(self, clear_topics: list[str]) -> None:
        handles = [self._client.publish(topic, b"", qos=1, retain=True) for topic in clear_topics]
        for handle in handles:
            handle.wait(PUBLISH_TIMEOUT_SECONDS)

    def _full_sync(self, boot: str) -> None:
        now = datetime.now(UTC)
        with self._sessions() as db:
            rows = store.revocations_in_force(db, now)
            clears = store.retained_clears_in_force(db, now)
        self._publish([*(revocation_line(r) for r in rows), f"SYNC {boot}"])
        self._clear(clears)
        mark = time.monotonic()
        self._sent = {r.seq: mark for r in rows}
        self._synced_boot = boot
        log.info("revocations synced to broker boot %s (%d in force)", boot, len(rows))

    def _publish(self, lines: Iterable[str]) -> None:
        handles = [
            self._client.publish(topics.BROKER_REVOCATIONS_TOPIC, payload, qos=1)
            for payload in batches(lines)
        ]
        for handle in handles:
            handle.wait(PUBLISH_TIMEOUT_SECONDS)
