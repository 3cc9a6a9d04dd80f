"""The bridge assembled: follows terminal events and receipts, knows who is online, pushes via FCM.

Where each concept lives:

* :mod:`bridge.intake`: events (live MQTT publication + catch-up sweep), receipts, sessions going
  offline: what makes a push decision exist or fall due;
* :mod:`bridge.presence` (+ :mod:`bridge.sessions`): who is online, as the broker tells it;
* :mod:`bridge.decision`: the pure decision, and what it is stored as;
* :mod:`bridge.store`: the durable state in PostgreSQL, shared by every bridge;
* :mod:`bridge.senders`: the threads that lease, send and record pushes;
* :mod:`bridge.loop`: the scheduling loop, the one thread that decides.

Threads: the MQTT client thread (plantnotify.mqtt) only hands messages and state changes to the
loop (events straight into the intake's queue, the rest to the inbox); the loop thread (:meth:`Bridge.run`) owns the session picture and does all
deciding; ``FCM_CONCURRENCY`` sender threads each lease due deliveries (with
``FCM_SENDER_PROCESSES``, that many processes of their own run them: :mod:`bridge.sender_process`). Everything a restart
needs is in PostgreSQL, so a restart in the middle of a grace period ends in exactly one push or
none.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from datetime import timedelta

from sqlalchemy import create_engine

from bridge import metrics
from bridge.credentials import resolve
from bridge.fcm import FcmSender
from bridge.intake import Intake
from bridge.loop import Item, Loop
from bridge.presence import BrokerPresence, PresenceSource, broker_presence_filters
from bridge.presence_nats import NatsPresence
from bridge.retry import RetryPolicy
from bridge.sender_process import SenderProcesses
from bridge.senders import Sender, Senders
from bridge.sessions import SessionPicture
from bridge.store import Store
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.ids import new_client_id
from plantnotify.contracts.topics import (
    ALL_ANALYSES_FILTER,
    ALL_RECEIPTS_FILTER,
    bridge_sync_topic,
)
from plantnotify.db.session import session_factory
from plantnotify.logs import log_context
from plantnotify.mqtt import ConnectOptions, Credentials, MqttClient
from plantnotify.service_mqtt import service_user
from plantnotify.settings import Settings

__all__ = ["Bridge", "Sender", "instance_name"]

log = logging.getLogger("plantnotify.bridge")


def instance_name(name: str | None) -> str:
    raw = name or f"{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", raw)[:40] or "bridge"


class Bridge:
    def __init__(
        self,
        settings: Settings,
        *,
        instance: str | None = None,
        sender: Sender | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.instance = instance_name(instance or settings.bridge_instance)
        self.mqtt_user = service_user("bridge")  # svc-bridge (plantnotify/service_mqtt.py)
        self.client_id = new_client_id(self.mqtt_user, self.instance)
        grace = timedelta(seconds=settings.fallback_grace_seconds)
        lease = timedelta(seconds=settings.bridge_lease_seconds)
        self.policy = policy or RetryPolicy(
            max_attempts=settings.fcm_max_attempts,
            base_delay=settings.fcm_retry_base_seconds,
            max_delay=settings.fcm_retry_max_seconds,
            config_delay=settings.fcm_config_retry_seconds,
            config_give_up_after=settings.fcm_config_give_up_seconds,
        )
        if lease.total_seconds() < 2 * (settings.fcm_http_timeout_seconds + 2):
            log.warning(
                "BRIDGE_LEASE_SECONDS=%s is short for FCM_HTTP_TIMEOUT_SECONDS=%s; a slow send "
                "may outlive its lease (use at least twice the time-out plus 4 s)",
                settings.bridge_lease_seconds,
                settings.fcm_http_timeout_seconds,
            )
        # No pre-ping: it is a round trip per checkout on the hot path. A connection that died
        # (PostgreSQL restarted) fails one statement, is invalidated by SQLAlchemy, and the loop
        # retries after a second.
        self._engine = create_engine(
            settings.database_url,
            pool_size=settings.fcm_concurrency + 2,
            max_overflow=settings.fcm_concurrency,
            pool_pre_ping=False,
            pool_recycle=600,
        )
        self.store = Store(session_factory(self._engine), self.instance)
        self.sender: Sender = sender or FcmSender(
            resolve(settings), timeout=settings.fcm_http_timeout_seconds
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        sync_topic = bridge_sync_topic(self.client_id)
        # Presence: the plugin's snapshots on this MQTT connection (Mosquitto), or $SYS events
        # on a NATS connection of its own (NATS).
        on_nats = settings.broker_engine == "nats"
        presence_filters = [] if on_nats else broker_presence_filters(sync_topic)
        # Several bridges of one share group each get a part of the events (Mosquitto hands
        # each publication to one member): the intake scales with bridge processes. Decisions
        # are safe with any number of bridges (see bridge.store); presence and receipts still
        # reach every bridge.
        events_filter = ALL_ANALYSES_FILTER
        if settings.bridge_share_group:
            if on_nats:
                log.warning(
                    "BRIDGE_SHARE_GROUP is ignored on NATS (no MQTT shared subscriptions): "
                    "every bridge takes in every event"
                )
            else:
                events_filter = f"$share/{settings.bridge_share_group}/{ALL_ANALYSES_FILTER}"
        self.events_filter = events_filter
        self.mqtt = MqttClient(
            ConnectOptions(
                host=settings.mqtt_host,
                port=settings.mqtt_port,
                client_id=self.client_id,
                credentials=self._credentials,
                protocol=settings.mqtt_protocol,
                failover=settings.mqtt_failover,
                # A persistent session: receipts published while this bridge restarts are
                # queued by the broker and read when it is back (same BRIDGE_INSTANCE).
                clean_start=False,
                session_expiry=settings.bridge_session_expiry_seconds,
                subscriptions=[
                    *presence_filters,
                    (ALL_RECEIPTS_FILTER, 1),
                    # QoS 0: every user's events, thousands a second, are a fast hint that the
                    # sweep of the events table backs up (the durable path). At QoS 1 the
                    # broker keeps at most max_inflight_messages (20) unacknowledged, so the
                    # intake ran at the pace of PUBACK round trips through a busy Python
                    # process, and beyond max_queued_messages the broker dropped them anyway.
                    (events_filter, 0),
                ],
                # Events are retained for days: replaying all of them on every (re)connect
                # only to skip them delayed the sync (and so every push decision) by minutes
                # once tens of thousands were retained (plantnotify bench, fallback scenario).
                # New publications are what the bridge follows; the sweep covers any gap.
                no_retained_replay=frozenset({events_filter}),
            ),
            on_message=lambda m: self.loop.message(m),
            on_state=lambda s: self.loop.put(Item("state", state=s)),
        )
        self.presence: PresenceSource = (
            NatsPresence(
                settings,
                lambda m: self.loop.put(Item("msg", message=m)),
                name=f"bridge-{self.instance}",
            )
            if on_nats
            else BrokerPresence(self.mqtt, sync_topic)
        )
        self.intake = Intake(
            self.store,
            self.presence.live,
            grace=grace,
            lookback=timedelta(seconds=settings.bridge_lookback_seconds),
        )
        self.senders: Senders | SenderProcesses
        if settings.fcm_sender_processes and sender is None:
            self.senders = SenderProcesses(
                settings, self.instance, settings.fcm_sender_processes, self._stop
            )
        else:
            self.senders = Senders(
                self.store,
                self.sender,
                self.policy,
                lease=lease,
                concurrency=settings.fcm_concurrency,
                ttl_seconds=settings.fcm_ttl_seconds,
                web_base_url=settings.public_base_url,
                stop=self._stop,
            )
        self.loop = Loop(
            store=self.store,
            presence=self.presence,
            intake=self.intake,
            senders=self.senders,
            grace=grace,
            poll=settings.bridge_poll_seconds,
            stop=self._stop,
        )

    @property
    def picture(self) -> SessionPicture:
        """The Mosquitto source's picture (tests); the NATS source answers ``live`` only."""
        if not isinstance(self.presence, BrokerPresence):
            raise AttributeError("the NATS presence source has no session picture")
        return self.presence.picture

    def _credentials(self) -> Credentials:
        ttl = self.settings.service_token_ttl_seconds
        user = self.mqtt_user
        token = mint_mqtt_token(self.settings.mqtt_signer, user, ttl, service=True)
        return Credentials(user, token, expires_at=time.time() + ttl)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Bridge:
        """Run on a background thread (tests, benchmarks); :meth:`run` is the foreground way."""
        self._thread = threading.Thread(target=self.run, name=f"bridge-{self.instance}")
        self._thread.start()
        return self

    def wait_in_sync(self, timeout: float = 10.0) -> None:
        """Block until the session picture is known (connected and replayed)."""
        if not self.presence.ready.wait(timeout):
            raise TimeoutError(f"bridge {self.instance} not in sync with the broker in {timeout}s")

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self.loop.put(Item("wake"))
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        with log_context(bridge=self.instance):
            log.info(
                "bridge starting",
                extra={"client_id": self.client_id, "grace_s": self.loop.grace.total_seconds()},
            )
            self.senders.start()
            self.mqtt.start()
            self.presence.start()
            try:
                self.loop.run()
            finally:
                self.senders.join(self.settings.fcm_http_timeout_seconds + 5)
                self.presence.stop()
                self.mqtt.stop()
                self._engine.dispose()
                metrics.IN_SYNC.set(0)
                log.info("bridge stopped")
