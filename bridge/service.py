"""The bridge: follows terminal events and receipts, knows who is online, pushes via FCM.

Threads and what they own:
* the MQTT client thread (plantnotify.mqtt) only hands messages and state changes to the inbox;
* the loop thread (:meth:`Bridge.run`) owns the session picture and does all deciding: it takes
  events in (a batch per wake-up), records receipts and settles due decisions;
* ``FCM_CONCURRENCY`` sender threads each lease one due delivery at a time, send it with
  firebase-admin's synchronous API and record the attempt; the loop wakes them when it created
  deliveries or a retry fell due.

Intake has two paths into the same idempotent insert: the live MQTT event (fast; retained
replays on subscribe are skipped) and a catch-up sweep of the ``events`` table (durable; finds
whatever was published while this bridge was away or disconnected). Everything a restart needs
is in PostgreSQL, so a restart in the middle of a grace period ends in exactly one push or none.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from firebase_admin import messaging
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError

from bridge import metrics
from bridge.credentials import resolve
from bridge.decision import Action, DecisionInput, decide
from bridge.fcm import FcmSender, SendResult, build_message, classify, device_ref
from bridge.retry import Outcome, RetryPolicy, next_step
from bridge.sessions import SessionPicture
from bridge.store import Claim, EventRef, NewDecision, ReceiptResult, Store
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.events import (
    PUSHABLE_EVENTS,
    AnalysisCompleted,
    AnalysisFailed,
    BrokerBoot,
    InvalidPayload,
    SessionSnapshot,
    parse_event,
    parse_receipt,
)
from plantnotify.contracts.ids import new_client_id
from plantnotify.contracts.topics import (
    ALL_ANALYSES_FILTER,
    ALL_RECEIPTS_FILTER,
    ALL_SESSIONS_FILTER,
    BROKER_BOOT_TOPIC,
    bridge_sync_topic,
    parse_topic,
)
from plantnotify.db.session import session_factory
from plantnotify.logs import log_context
from plantnotify.mqtt import (
    ConnectionState,
    ConnectOptions,
    Credentials,
    Message,
    MqttClient,
    MqttError,
)
from plantnotify.service_mqtt import service_user
from plantnotify.settings import Settings

log = logging.getLogger("plantnotify.bridge")

SYNC_FALLBACK_SECONDS = 5.0  # if our own sync marker never comes back, trust the replay anyway
# After a start, no decision is settled until the bridge has been in sync once (bounded): the
# receipts the broker kept in our persistent session while we were away are read first.
STARTUP_HOLD_SECONDS = 10.0
MAX_BATCH = 500
# Deliveries one sender thread leases at once (one transaction instead of four); far below
# what a lease covers: each send is bounded by FCM_HTTP_TIMEOUT_SECONDS.
CLAIM_BATCH = 4
SWEEP_BATCH = 1000  # events taken in per sweep query (a backlog is swept pass after pass)


class Sender(Protocol):
    def send(self, message: messaging.Message) -> SendResult: ...


@dataclass(frozen=True, slots=True)
class _Item:
    kind: str  # "msg" | "state" | "wake"
    message: Message | None = None
    state: ConnectionState | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        self.grace = timedelta(seconds=settings.fallback_grace_seconds)
        self.lookback = timedelta(seconds=settings.bridge_lookback_seconds)
        self.poll = settings.bridge_poll_seconds
        self.lease = timedelta(seconds=settings.bridge_lease_seconds)
        self.policy = policy or RetryPolicy(
            max_attempts=settings.fcm_max_attempts,
            base_delay=settings.fcm_retry_base_seconds,
            max_delay=settings.fcm_retry_max_seconds,
            config_delay=settings.fcm_config_retry_seconds,
            config_give_up_after=settings.fcm_config_give_up_seconds,
        )
        if self.lease.total_seconds() < 2 * (settings.fcm_http_timeout_seconds + 2):
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
        self.picture = SessionPicture()
        self._inbox: queue.Queue[_Item] = queue.Queue()
        self._arrivals: list[tuple[str, str, str]] = []  # (eventId, userId, analysisId)
        self._sync_topic = bridge_sync_topic(self.client_id)
        self._sync_wanted = False
        self._sync_nonce: str | None = None
        self._sync_sent_at = 0.0
        self._dirty = True
        self._next_check = 0.0
        self._next_sweep = 0.0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._synced_once = False
        self._hold_until = 0.0
        self._thread: threading.Thread | None = None
        self._senders: list[threading.Thread] = []
        self._work = threading.Condition()
        self._work_seq = 0
        self.mqtt = MqttClient(
            ConnectOptions(
                host=settings.mqtt_host,
                port=settings.mqtt_port,
                client_id=self.client_id,
                credentials=self._credentials,
                protocol=5,
                # A persistent session: receipts published while this bridge restarts are
                # queued by the broker and read when it is back (same BRIDGE_INSTANCE).
                clean_start=False,
                session_expiry=settings.bridge_session_expiry_seconds,
                subscriptions=[
                    (BROKER_BOOT_TOPIC, 1),
                    (ALL_SESSIONS_FILTER, 1),
                    (ALL_RECEIPTS_FILTER, 1),
                    (ALL_ANALYSES_FILTER, 1),
                    (self._sync_topic, 1),
                ],
                # Events are retained for days: replaying all of them on every (re)connect
                # only to skip them delayed the sync (and so every push decision) by minutes
                # once tens of thousands were retained (plantnotify bench, fallback scenario).
                # New publications are what the bridge follows; the sweep covers any gap.
                no_retained_replay=frozenset({ALL_ANALYSES_FILTER}),
            ),
            on_message=lambda m: self._inbox.put(_Item("msg", message=m)),
            on_state=lambda s: self._inbox.put(_Item("state", state=s)),
        )

    # --- lifecycle ----------------------------------------------------------------------------

    def _credentials(self) -> Credentials:
        ttl = self.settings.service_token_ttl_seconds
        user = self.mqtt_user
        token = mint_mqtt_token(self.settings.mqtt_signer, user, ttl, service=True)
        return Credentials(user, token, expires_at=time.time() + ttl)

    def start(self) -> Bridge:
        """Run on a background thread (tests, benchmarks); :meth:`run` is the foreground way."""
        self._thread = threading.Thread(target=self.run, name=f"bridge-{self.instance}")
        self._thread.start()
        return self

    def wait_in_sync(self, timeout: float = 10.0) -> None:
        """Block until the session picture is known (connected and replayed)."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"bridge {self.instance} not in sync with the broker in {timeout}s")

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._inbox.put(_Item("wake"))
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        with log_context(bridge=self.instance):
            log.info(
                "bridge starting",
                extra={"client_id": self.client_id, "grace_s": self.grace.total_seconds()},
            )
            self._hold_until = time.monotonic() + STARTUP_HOLD_SECONDS
            for n in range(self.settings.fcm_concurrency):
                t = threading.Thread(target=self._sender_loop, name=f"fcm-send-{n}", daemon=True)
                t.start()
                self._senders.append(t)
            self.mqtt.start()
            try:
                self._loop()
            finally:
                self._wake_senders()
                for t in self._senders:  # in-flight sends finish and are recorded
                    t.join(self.settings.fcm_http_timeout_seconds + 5)
                self.mqtt.stop()
                self._engine.dispose()
                metrics.IN_SYNC.set(0)
                log.info("bridge stopped")

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                item: _Item | None = self._inbox.get(timeout=self._wait_time())
            except queue.Empty:
                item = None
            batch = [item] if item is not None else []
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            for it in batch:
                self._handle(it)
            if self._stop.is_set():
                break
            try:
                self._take_in_arrivals()
                self._maybe_sync()
                mono = time.monotonic()
                if mono >= self._next_sweep:
                    self._next_sweep = mono + self.poll
                    self._sweep()
                if self._dirty or mono >= self._next_check:
                    self._dirty = False
                    self._tick()
            except DBAPIError as exc:
                log.error("database error in the bridge loop; retrying in 1 s: %s", exc.orig)
                self._arrivals.clear()  # the sweep finds them again from the events table
                self._next_check = time.monotonic() + 1.0
                self._stop.wait(1.0)

    def _wait_time(self) -> float:
        if self._dirty or (self._sync_wanted and self._sync_nonce is None):
            return 0.02
        if self._sync_nonce is not None:
            return 0.1
        deadline = min(self._next_check, self._next_sweep)
        return max(0.0, min(self.poll, deadline - time.monotonic()))

    def _handle(self, item: _Item) -> None:
        """One inbox item. A database failure here loses at most a receipt (the push then
        happens: the safe side) or an event's fast path (the sweep finds it again)."""
        try:
            if item.kind == "state":
                self._on_state(item.state)
            elif item.kind == "msg" and item.message is not None:
                self._on_message(item.message)
        except DBAPIError as exc:
            log.error("database error handling a message; it is dropped: %s", exc.orig)
        except Exception:
            log.exception("unexpected error handling %s; ignored", item.kind)

    def _on_state(self, state: ConnectionState | None) -> None:
        if state is ConnectionState.CONNECTED:
            log.info("connected to the broker; rebuilding the session picture")
            self.picture.reset()
            self._sync_wanted = True
            self._sync_nonce = None
        elif state is ConnectionState.DISCONNECTED:
            if self.picture.known:
                log.warning("lost the broker; forgetting who is online until reconnected")
            self.picture.reset()
            self._sync_wanted = False
            self._sync_nonce = None
            self._ready.clear()
            self._update_gauges()

    def _maybe_sync(self) -> None:
        """After SUBACK, publish a marker to ourselves: when it comes back, the retained
        replay (boot + every session snapshot) queued before it has been read."""
        if self._sync_wanted and self._sync_nonce is None:
            try:
                self.mqtt.wait_connected(timeout=0)
                self._sync_nonce = secrets.token_hex(8)
                self._sync_sent_at = time.monotonic()
                self.mqtt.publish(self._sync_topic, self._sync_nonce.encode(), qos=1)
            except MqttError:
                self._sync_nonce = None
                return
        if (
            self._sync_nonce is not None
            and time.monotonic() - self._sync_sent_at > SYNC_FALLBACK_SECONDS
        ):
            log.warning("sync marker did not come back; trusting the replay read so far")
            self._synced()

    def _synced(self) -> None:
        self._sync_wanted = False
        self._sync_nonce = None
        self.picture.mark_synced()
        totals = self.picture.totals()
        log.info(
            "session picture in sync",
            extra={"boot_id": self.picture.boot_id, "live_users": totals.users},
        )
        # Pending decisions of users who went offline while we were not looking: due now.
        offline = [u for u in self.store.pending_users() if self.picture.live(u) == 0]
        if self.store.expedite(offline, utcnow()):
            self._dirty = True
        self._update_gauges()
        self._synced_once = True
        self._dirty = True
        self._ready.set()

    def _update_gauges(self) -> None:
        totals = self.picture.totals()
        metrics.LIVE_SESSIONS.set(totals.connections)
        metrics.LIVE_USERS.set(totals.users)
        metrics.IN_SYNC.set(1 if self.picture.known else 0)

    # --- messages -------------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.topic == self._sync_topic:
            if self._sync_nonce is not None and msg.payload == self._sync_nonce.encode():
                self._synced()
            return
        if msg.topic == BROKER_BOOT_TOPIC:
            try:
                boot = BrokerBoot.model_validate_json(msg.payload)
            except ValueError:
                log.warning("malformed broker boot message ignored")
                return
            if self.picture.on_boot(boot):
                log.info("broker boot %s", boot.boot_id)
                self._update_gauges()
            return
        ref = parse_topic(msg.topic)
        if ref is None:
            return
        if ref.kind == "session":
            self._on_snapshot(ref.user_id, msg.payload)
        elif ref.kind == "receipts":
            self._on_receipt(ref.user_id, msg.payload)
        elif ref.kind == "analysis":
            self._on_event(ref.user_id, ref.analysis_id or "", msg)

    def _on_snapshot(self, user_id: str, payload: bytes) -> None:
        try:
            snap = SessionSnapshot.model_validate_json(payload)
        except ValueError:
            log.warning("malformed session snapshot ignored", extra={"user_id": user_id})
            return
        if snap.user_id != user_id:
            log.warning("session snapshot on another user's topic ignored")
            return
        went_offline = self.picture.on_snapshot(snap)
        self._update_gauges()
        if went_offline and self.store.expedite([user_id], utcnow()):
            log.info("user went offline during a grace period", extra={"user_id": user_id})
            self._dirty = True

    def _on_receipt(self, user_id: str, payload: bytes) -> None:
        try:
            receipt = parse_receipt(payload)
        except InvalidPayload as exc:
            metrics.RECEIPTS.labels("malformed").inc()
            log.warning("receipt ignored: %s", exc, extra={"user_id": user_id})
            return
        if "\x00" in receipt.event_id:
            metrics.RECEIPTS.labels("malformed").inc()
            log.warning("receipt ignored: NUL in eventId", extra={"user_id": user_id})
            return
        result = self.store.record_receipt(user_id, receipt.event_id, utcnow())
        metrics.RECEIPTS.labels(str(result)).inc()
        if result is ReceiptResult.FOREIGN:
            log.warning(
                "receipt for an event this user does not own ignored", extra={"user_id": user_id}
            )
        else:
            self._dirty = True

    def _on_event(self, user_id: str, analysis_id: str, msg: Message) -> None:
        if msg.retain:
            return  # a replay on (re)subscribe, not a new publication; the sweep covers gaps
        try:
            event = parse_event(msg.payload)
        except InvalidPayload as exc:
            log.warning("event ignored: %s", exc, extra={"user_id": user_id})
            return
        if event.event not in PUSHABLE_EVENTS:
            return  # progress events never cause a push
        if event.user_id != user_id or event.analysis_id != analysis_id:
            log.warning("event on a topic that does not match its body ignored")
            return
        self._arrivals.append((event.event_id, user_id, analysis_id))

    # --- deciding and delivering ----------------------------------------------------------------

    def _take_in_arrivals(self) -> None:
        """The events that arrived over MQTT in this batch, checked against the database (the
        worker commits the row before it publishes): one query and one insert per batch."""
        if not self._arrivals:
            return
        arrivals, self._arrivals = self._arrivals, []
        refs = self.store.events([eid for eid, _, _ in arrivals])
        good = []
        for eid, uid, aid in arrivals:
            ref = refs.get(eid)
            if ref is None or ref.user_id != uid or ref.analysis_id != aid:
                log.warning("event not in the database ignored", extra={"user_id": uid})
            elif ref.type in PUSHABLE_EVENTS:
                good.append(ref)
        self._intake(good, utcnow())

    def _intake(self, refs: list[EventRef], now: datetime) -> None:
        rows = []
        for ref in refs:
            published = min(now, ref.published_at) if ref.published_at is not None else now
            if published < now - self.lookback:
                continue
            live = self.picture.live(ref.user_id)
            first = decide(
                DecisionInput(
                    ref.type, published, now, self.grace, live_at_publish=live, live_now=live
                )
            )
            due = first.until if first.action is Action.WAIT and first.until else now
            rows.append(NewDecision(ref, published, live, due))
        created = self.store.create_decisions(rows)
        if created:
            self._dirty = True
        for r in rows:
            if r.ref.event_id in created:
                log.debug(
                    "event taken in",
                    extra={
                        "event_id": r.ref.event_id,
                        "user_id": r.ref.user_id,
                        "live": r.live_at_publish,
                        "wait_s": round((r.due_at - now).total_seconds(), 3),
                    },
                )

    def _sweep(self) -> None:
        """Terminal events published but not taken in (this bridge was away, or MQTT missed
        them). A full batch means a backlog: sweep again on the next pass, not after a poll."""
        now = utcnow()
        refs = self.store.unseen_published(now - self.lookback, limit=SWEEP_BATCH)
        self._intake(refs, now)
        if len(refs) >= SWEEP_BATCH:
            self._next_sweep = time.monotonic()

    def _tick(self) -> None:
        now = utcnow()
        if (self._synced_once or time.monotonic() >= self._hold_until) and self._decide(now):
            self._wake_senders()  # new deliveries: do not wait for the next query
        nxt = self.store.next_due()
        if nxt is not None and nxt <= utcnow():
            self._wake_senders()  # new deliveries, or a retry that fell due
        wait = self.poll if nxt is None else (nxt - utcnow()).total_seconds()
        self._next_check = time.monotonic() + max(0.0, min(self.poll, wait))

    def _decide(self, now: datetime) -> bool:
        """Settle due decisions; True when some of them created deliveries."""
        pushed = False
        for f in self.store.process_due(now, self.grace, self.picture.live):
            pushed = pushed or f.devices > 0
            metrics.DECISIONS.labels(f.state).inc()
            metrics.DECISION_LATENCY.labels(f.state).observe(
                max(0.0, (now - f.published_at).total_seconds())
            )
            if f.state == "suppressed":
                metrics.SUPPRESSED_BY_RECEIPT.inc()
            log.info(
                "push decision: %s (%s)",
                f.state,
                f.reason,
                extra={"event_id": f.event_id, "user_id": f.user_id, "devices": f.devices},
            )
        return pushed

    def _wake_senders(self) -> None:
        with self._work:
            self._work_seq += 1
            self._work.notify_all()

    def _sender_loop(self) -> None:
        """A sender thread: lease one due delivery, send it, record it; sleep when none is due.
        Reading the wake-up counter before claiming means no wake-up is ever missed."""
        with log_context(bridge=self.instance):
            while not self._stop.is_set():
                with self._work:
                    seen = self._work_seq
                try:
                    claims = self.store.claim_deliveries(utcnow(), self.lease, CLAIM_BATCH)
                except DBAPIError as exc:
                    log.error("database error leasing a push; retrying in 1 s: %s", exc.orig)
                    self._stop.wait(1.0)
                    continue
                if claims:
                    for claim in claims:  # sent even if we are stopping: they are leased
                        self._deliver(claim)
                    continue
                with self._work:
                    while self._work_seq == seen and not self._stop.is_set():
                        self._work.wait(timeout=5.0)

    def _deliver(self, claim: Claim) -> None:
        """One attempt at FCM, recorded in the database whatever happens. A lease that could run
        out during the send is given back unsent: another bridge may take it then, and two
        sends of one delivery must never overlap."""
        with log_context(
            event_id=claim.event_id,
            user_id=claim.user_id,
            analysis_id=claim.analysis_id,
            request_id=claim.request_id,
        ):
            try:
                if utcnow() + self.lease / 2 >= claim.lease_until:
                    self.store.release(claim, utcnow())
                    return
                self._attempt(claim)
            except Exception:
                log.exception("recording a push attempt failed; its lease will expire and retry")

    def _attempt(self, claim: Claim) -> None:
        started = utcnow()
        if claim.lost_previous:
            metrics.PUSHES.labels("unknown").inc()
        result = self._send(claim)
        finished = utcnow()
        step = next_step(
            self.policy,
            result.outcome,
            attempts=claim.attempt,
            age=(finished - claim.created_at).total_seconds(),
            retry_after=result.retry_after,
        )
        self.store.record_attempt(
            claim,
            outcome=result.outcome,
            step=step,
            started=started,
            finished=finished,
            http_status=result.http_status,
            error_code=result.error_code,
            detail=result.detail or None,
            retry_after=result.retry_after,
            message_id=result.message_id,
        )
        metrics.PUSHES.labels(str(result.outcome)).inc()
        if step.retry_in is None:
            metrics.DELIVERIES.labels(step.status).inc()
        extra: dict[str, Any] = {
            "device": device_ref(claim.device_token),
            "attempt": claim.attempt,
            "outcome": str(result.outcome),
            "status": step.status,
        }
        if result.outcome is Outcome.SENT:
            if claim.published_at is not None:
                metrics.PUSH_LATENCY.observe(
                    max(0.0, (finished - claim.published_at).total_seconds())
                )
            log.info("push sent", extra=extra)
        elif result.outcome is Outcome.CONFIG:
            metrics.CONFIG_ERRORS.inc()
            log.error(
                "FCM configuration problem (check FCM_CREDENTIALS_FILE / FCM_ENDPOINT / the "
                "project): %s; the device is kept and the push retried in %.0fs",
                result.detail,
                step.retry_in or 0,
                extra=extra,
            )
        elif result.outcome is Outcome.DEVICE_GONE:
            log.info("device token no longer valid; device removed", extra=extra)
        else:
            log.warning(
                "push not delivered: %s %s",
                result.error_code,
                result.detail,
                extra={**extra, "retry_in": step.retry_in},
            )

    def _send(self, claim: Claim) -> SendResult:
        try:
            event = parse_event(claim.payload)
            if not isinstance(event, AnalysisCompleted | AnalysisFailed):
                return SendResult(Outcome.FAILED, error_code="NOT_PUSHABLE")
            message = build_message(
                event,
                claim.device_token,
                ttl_seconds=self.settings.fcm_ttl_seconds,
                web_base_url=self.settings.public_base_url,
            )
            return self.sender.send(message)
        except Exception as exc:
            return classify(exc)
