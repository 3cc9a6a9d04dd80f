"""At most MQTT_MAX_PERSISTENT_SESSIONS_PER_USER persistent MQTT sessions per user, oldest
ended first (issue 14, finding 9).

Mosquitto keeps the session of a client that did not start clean, with its queue (up to
``max_queued_messages``), until that client id comes back or ``persistent_client_expiration``
(7 days) ends it; one user could leave any number behind. The plugin API of Mosquitto 2.0 cannot
end an offline session, but a CONNECT with the same client id and a clean start replaces it,
queue and subscriptions included. So:

- the plugin publishes a ``PersistentSessionOpened`` for every accepted user CONNECT that does
  not start clean (mosquitto/plugin/persistent.c);
- each API process (this module: a thread and a service MQTT connection, user ``svc-api``)
  records them in ``mqtt_persistent_sessions`` (client id → user, latest CONNECT);
- when a user has more than the cap, the oldest sessions that are not connected right now
  (the plugin's whole picture of online users, asked for once per user over the cap) are
  ended: the row is deleted, then the API connects with that client id, a clean start and a
  token of that user minted here, and disconnects; the deletion commits only once that CONNECT
  was accepted, together with an ``mqtt_session_evicted`` audit entry. With several API
  replicas each gets every notice; the row lock of the DELETE lets one of them end a session.

Known limits: a notice published while no API process is connected is lost, so that session
is capped only after its next CONNECT (``persistent_client_expiration`` still ends it); MQTT 5
clients that start clean but set a session expiry interval are not reported (the plugin API does
not show the interval); the take-over is one short connection of the user, which the bridge may
see as the user being online for a moment.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from api import audit, store
from plantnotify.broker.picture import online_client_ids
from plantnotify.contracts import topics
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.events import PersistentSessionOpened
from plantnotify.logs import get_logger
from plantnotify.mqtt import ConnectOptions, Credentials, Message, MqttClient, MqttError
from plantnotify.service_mqtt import service_connect_options
from plantnotify.settings import Settings

log = get_logger("plantnotify.api.session_cap")

TAKEOVER_TOKEN_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 5.0
PICTURE_TIMEOUT_SECONDS = 10.0
MAX_PENDING_NOTICES = 10_000


@dataclass(frozen=True, slots=True)
class Recorded:
    client_id: str
    opened_at: datetime


def sessions_to_end(sessions: Sequence[Recorded], live: Collection[str], cap: int) -> list[str]:
    """The client ids to end so that at most ``cap`` sessions remain: oldest CONNECT first,
    never one that is connected now (then fewer are ended; the next notice tries again)."""
    excess = len(sessions) - cap
    if excess <= 0:
        return []
    oldest_first = sorted(sessions, key=lambda s: (s.opened_at, s.client_id))
    return [s.client_id for s in oldest_first if s.client_id not in live][:excess]


class SessionCap:
    """Records persistent sessions from the plugin's notices and ends those over the cap."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._cap = settings.mqtt_max_persistent_sessions_per_user
        self._notices: queue.Queue[PersistentSessionOpened] = queue.Queue(MAX_PENDING_NOTICES)
        self._stop = threading.Event()
        self._client = MqttClient(
            service_connect_options(
                settings,
                "api",
                subscriptions=[(topics.BROKER_PERSISTENT_SESSIONS_TOPIC, 1)],
            ),
            on_message=self._on_message,
        )
        self._thread = threading.Thread(target=self._run, name="session-cap", daemon=True)

    def start(self) -> SessionCap:
        self._client.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.stop()

    # --- MQTT thread -----------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        try:
            notice = PersistentSessionOpened.model_validate_json(message.payload)
        except ValidationError:
            log.warning("ignoring a malformed persistent-session notice")
            return
        try:
            self._notices.put_nowait(notice)
        except queue.Full:
            log.warning("persistent-session notices pile up; dropping one for %s", notice.user_id)

    # --- cap thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                notice = self._notices.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.handle(notice)
            except MqttError as exc:
                log.info("persistent sessions of %s not capped yet: %s", notice.user_id, exc)
            except Exception:  # a database hiccup: the user's next notice tries again
                log.exception("session cap step failed")

    def handle(self, notice: PersistentSessionOpened) -> list[str]:
        """Records the notice; ends the user's sessions over the cap. Returns the ended ids."""
        user = notice.user_id
        opened = datetime.fromtimestamp(notice.at / 1000, UTC)
        with self._sessions.begin() as db:
            store.record_persistent_session(db, notice.client_id, user, opened)
            recorded = [Recorded(*row) for row in store.persistent_sessions(db, user)]
        if not sessions_to_end(recorded, (), self._cap):
            return []
        live = online_client_ids(self._settings, "api", user, timeout=PICTURE_TIMEOUT_SECONDS)
        ended = []
        for client_id in sessions_to_end(recorded, live, self._cap):
            if self._end(user, client_id):
                ended.append(client_id)
        return ended

    def _end(self, user: str, client_id: str) -> bool:
        with self._sessions.begin() as db:
            opened_at = store.forget_persistent_session(db, client_id, user)
            if opened_at is None:
                return False  # another replica ended it, or it was opened again meanwhile
            take_over(self._settings, user, client_id)
            audit.record(
                db,
                audit.MQTT_SESSION_EVICTED,
                user_id=user,
                clientId=client_id,
                openedAt=opened_at.isoformat(),
                cap=self._cap,
            )
        log.info("ended persistent MQTT session %s of %s (over %d)", client_id, user, self._cap)
        return True


def take_over(settings: Settings, user: str, client_id: str) -> None:
    """Connects as ``user`` with ``client_id`` and a clean start, then disconnects: the broker
    drops that client id's old session and queue. Raises MqttError if the CONNECT is refused."""
    now = int(time.time())
    token = mint_mqtt_token(settings.mqtt_signer, user, TAKEOVER_TOKEN_SECONDS, now=now)
    client = MqttClient(
        ConnectOptions(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            client_id=client_id,
            credentials=lambda: Credentials(user, token, expires_at=now + TAKEOVER_TOKEN_SECONDS),
            protocol=settings.mqtt_protocol,
            clean_start=True,
            session_expiry=0,
        )
    ).start()
    try:
        client.wait_connected(CONNECT_TIMEOUT_SECONDS)
    finally:
        client.stop()
