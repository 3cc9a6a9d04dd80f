"""The outbox publisher: events committed in PostgreSQL -> retained QoS-1 MQTT messages.

- **Source of truth**: ``events`` rows with ``published_at IS NULL``, in ``seq`` order. A row is
  marked published only after the broker's PUBACK; a crash in between publishes it again
  (clients de-duplicate on ``eventId``).
- **One publisher at a time** (per-analysis order): the process holding the session-level
  advisory lock ``(OUTBOX_LOCK_CLASS, 1)`` leads; the others retry every second or so, and
  PostgreSQL frees the lock the moment the leader's connection dies, so a follower takes over
  within about a second and publishes whatever the dead leader had left.
- **Woken at once**: in-process by :meth:`wake` (right after a commit) and across processes by
  ``NOTIFY plantnotify_events`` (a trigger on ``events``, delivered at commit); a periodic sweep
  is the safety net.
- **Throughput**: a batch goes out with many publishes in flight, then one UPDATE marks the
  acknowledged prefix. If a publish fails, only the prefix before it is marked, so nothing is
  ever re-sent out of order (a retained message must never go back to an older event).
- **Broker restarts**: the broker's plugin retains a ``BrokerBoot`` with a fresh ``bootId`` on
  every start. When the leader sees a boot id other than the one whose state it last rebuilt
  (kept in ``outbox_state``), it re-publishes the latest unexpired event of every analysis, with
  its remaining expiry, so the broker's retained state matches the database again even when the
  broker lost it (Mosquitto only saves to disk every ``autosave_interval``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions

from plantnotify.contracts.events import BrokerBoot, InvalidPayload, parse_event
from plantnotify.contracts.topics import BROKER_BOOT_TOPIC, analysis_topic
from plantnotify.mqtt import ConnectOptions, Message, MqttClient, MqttError
from plantnotify.mqtt.client import PublishHandle
from worker import metrics
from worker.presence import OUTBOX_LOCK_CLASS, connect_raw

log = logging.getLogger("plantnotify.worker.outbox")

EVENTS_CHANNEL = "plantnotify_events"  # spelled in migration worker01 (the trigger) as well
REBUILT_BOOT_KEY = "rebuilt_boot_id"
OUTBOX_LOCK_KEY = 1


@dataclass(frozen=True, slots=True)
class _Row:
    seq: int
    topic: str
    payload: bytes
    expiry: int  # seconds left; <= 0: expired, not published
    age: float  # seconds since the commit


def render(payload: dict[str, Any]) -> bytes:
    """The wire bytes of a stored event (contract field order; validated on the way out)."""
    try:
        return parse_event(payload).to_json_bytes()
    except InvalidPayload:
        log.warning("stored event does not match the contract models; sending it as stored")
        return json.dumps(payload, separators=(",", ":")).encode()


class OutboxPublisher:
    def __init__(
        self,
        database_url: str,
        mqtt_options: ConnectOptions,
        *,
        batch_size: int = 500,
        sweep_seconds: float = 5.0,
        leader_retry_seconds: float = 1.0,
        puback_timeout: float = 10.0,
    ) -> None:
        self._url = database_url
        self._batch = batch_size
        self._sweep = sweep_seconds
        self._leader_retry = min(leader_retry_seconds, sweep_seconds)
        self._puback_timeout = puback_timeout
        options = mqtt_options
        if not any(topic == BROKER_BOOT_TOPIC for topic, _ in options.subscriptions):
            options.subscriptions.append((BROKER_BOOT_TOPIC, 1))
        self.mqtt = MqttClient(options, on_message=self._on_mqtt_message, max_inflight=1000)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conn: psycopg2.extensions.connection | None = None
        self._leader = threading.Event()
        self._boot_lock = threading.Lock()
        self._seen_boot: str | None = None
        self._rebuilt_boot: str | None = None
        self._thread: threading.Thread | None = None

    # --- control (any thread) -------------------------------------------------------------

    def start(self, *, lead: bool = True) -> OutboxPublisher:
        """Connect, and (unless ``lead`` is False: fault injection) compete for leadership."""
        self.mqtt.start()
        if lead:
            self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.wake()
        if self._thread is not None:
            # Let a batch in flight get its PUBACKs; if that takes long, dropping the MQTT
            # connection fails the waits at once (those events are simply published again).
            self._thread.join(min(2.0, timeout))
            self.mqtt.stop()
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("outbox publisher did not stop within %.0fs", timeout)
            self._thread = None
        self.mqtt.stop()
        self._wake_r.close()
        self._wake_w.close()

    def wake(self) -> None:
        """Publish now (called right after an event commit in this process)."""
        # A full buffer means it is woken already; a closed socket means we are stopping.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")

    @property
    def is_leader(self) -> bool:
        return self._leader.is_set()

    def wait_leader(self, timeout: float) -> bool:
        return self._leader.wait(timeout)

    # --- MQTT thread: hand the boot id over ------------------------------------------------

    def _on_mqtt_message(self, message: Message) -> None:
        if message.topic != BROKER_BOOT_TOPIC or not message.payload:
            return
        try:
            boot = BrokerBoot.model_validate_json(message.payload)
        except ValueError:
            log.warning("ignoring a malformed broker boot message")
            return
        with self._boot_lock:
            changed = boot.boot_id != self._seen_boot
            self._seen_boot = boot.boot_id
        if changed:
            log.info("broker boot %s seen", boot.boot_id)
            self.wake()

    # --- publisher thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._become_leader():
                    self._lead()
                    self._resign()
            except psycopg2.Error as exc:
                log.warning("outbox database connection failed: %s", str(exc).strip())
                self._resign()
            except Exception:
                log.exception("outbox publisher failed; restarting it")
                self._resign()
            self._stop.wait(self._leader_retry)
        self._resign()

    def _become_leader(self) -> bool:
        """Try the leader lock (keeping one idle connection between tries as a follower)."""
        if self._conn is None:
            self._conn = connect_raw(self._url, name="plantnotify-outbox")
        with self._conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (OUTBOX_LOCK_CLASS, OUTBOX_LOCK_KEY))
            row = cur.fetchone()
            if not row or not row[0]:
                return False
            cur.execute(f"LISTEN {EVENTS_CHANNEL}")
        self._leader.set()
        metrics.OUTBOX_LEADER.set(1)
        log.info("this process is now the outbox publisher (pid %d)", os.getpid())
        return True

    def _resign(self) -> None:
        """Leaving :meth:`_lead` means the connection failed or we stop: drop it (and the lock)."""
        was_leader = self._leader.is_set()
        self._leader.clear()
        metrics.OUTBOX_LEADER.set(0)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        if was_leader and not self._stop.is_set():
            log.warning("outbox leadership lost; trying to take it again")

    def _lead(self) -> None:
        conn = self._conn
        assert conn is not None
        done = self._step()
        while not self._stop.is_set():
            # psycopg2 reads NOTIFYs off the socket whenever it runs a query, so one that
            # arrived while the last step ran its queries sits in conn.notifies and select()
            # will not wake for it; its event may have committed after the step's last SELECT
            # (the bench saw such events wait for the sweep, 5 s). Step again at once then.
            timeout = 0.0 if conn.notifies else (self._sweep if done else 0.2)
            conn.notifies.clear()
            readable, _, _ = select.select([conn, self._wake_r], [], [], timeout)
            if conn in readable:
                conn.poll()  # raises if the connection (and so the leadership) is gone
                conn.notifies.clear()
            if self._wake_r in readable:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except BlockingIOError:
                    pass
            if not readable and timeout > 0:
                # Quiet: check the connection (and our lock) is still alive.
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            done = self._step()

    def _step(self) -> bool:
        """Drain the outbox and rebuild retained state if needed; True when all is done."""
        if not self.mqtt.is_connected:
            self._update_lag()
            return False
        drained = self._drain()
        if drained and self._rebuild_pending():
            drained = self._rebuild_if_needed() and self._drain()
        if drained:
            metrics.OUTBOX_LAG.set(0)
        else:
            self._update_lag()
        return drained

    # --- publishing -----------------------------------------------------------------------

    def _drain(self) -> bool:
        """Publish unpublished events in ``seq`` order; True when none is left."""
        while not self._stop.is_set():
            rows = self._fetch_unpublished()
            if not rows:
                return True
            done = self._publish(rows)
            if done:
                self._mark_published([r.seq for r in rows[:done]])
                metrics.EVENTS_PUBLISHED.inc(sum(1 for r in rows[:done] if r.expiry > 0))
                for r in rows[:done]:
                    metrics.OUTBOX_DELAY.observe(r.age)
            if done < len(rows):
                return False
            if len(rows) < self._batch:
                return True
        return False

    def _publish(self, rows: list[_Row]) -> int:
        """Publish rows with many in flight; the number of rows, from the first, that made it."""
        handles: list[PublishHandle | None] = []
        for row in rows:
            if row.expiry <= 0:
                handles.append(None)  # expired before it could go out: nothing to send
                continue
            try:
                handles.append(
                    self.mqtt.publish(row.topic, row.payload, qos=1, retain=True, expiry=row.expiry)
                )
            except MqttError as exc:
                metrics.PUBLISH_FAILURES.labels(kind="not_connected").inc()
                log.info("publish paused: %s", exc)
                break
        done = 0
        for handle in handles:
            if handle is not None:
                try:
                    handle.wait(self._puback_timeout)
                except MqttError as exc:
                    metrics.PUBLISH_FAILURES.labels(kind="not_acknowledged").inc()
                    log.info("publish not acknowledged (%s); will publish again", exc)
                    break
            done += 1
        return done

    def _fetch_unpublished(self) -> list[_Row]:
        assert self._conn is not None
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT seq, user_id, analysis_id, payload, "
                "EXTRACT(EPOCH FROM expires_at - now()), EXTRACT(EPOCH FROM now() - created_at) "
                "FROM events WHERE published_at IS NULL ORDER BY seq LIMIT %s",
                (self._batch,),
            )
            return [self._row(*r) for r in cur.fetchall()]

    def _mark_published(self, seqs: list[int]) -> None:
        assert self._conn is not None
        with self._conn.cursor() as cur:
            # Losing this mark in a database crash only means publishing again (clients
            # de-duplicate on eventId), so it need not wait for the WAL flush.
            cur.execute(
                "BEGIN; SET LOCAL synchronous_commit = off; "
                "UPDATE events SET published_at = now() WHERE seq = ANY(%s); COMMIT",
                (seqs,),
            )

    @staticmethod
    def _row(seq: int, user_id: str, analysis_id: str, payload: Any, left: Any, age: Any) -> _Row:
        if isinstance(payload, str):
            payload = json.loads(payload)
        return _Row(
            seq=seq,
            topic=analysis_topic(user_id, analysis_id),
            payload=render(payload),
            expiry=math.floor(float(left)),
            age=max(0.0, float(age)),
        )

    def _update_lag(self) -> None:
        if self._conn is None:
            return
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT EXTRACT(EPOCH FROM now() - created_at) FROM events "
                "WHERE published_at IS NULL ORDER BY seq LIMIT 1"
            )
            row = cur.fetchone()
        metrics.OUTBOX_LAG.set(float(row[0]) if row else 0.0)

    # --- retained state after a broker restart --------------------------------------------

    def _rebuild_pending(self) -> bool:
        with self._boot_lock:
            return self._seen_boot is not None and self._seen_boot != self._rebuilt_boot

    def _rebuild_if_needed(self) -> bool:
        """Re-publish the latest event of every analysis for a new broker boot; True when done."""
        with self._boot_lock:
            boot = self._seen_boot
        if boot is None or boot == self._rebuilt_boot:
            return True
        assert self._conn is not None
        with self._conn.cursor() as cur:
            cur.execute("SELECT value FROM outbox_state WHERE key = %s", (REBUILT_BOOT_KEY,))
            row = cur.fetchone()
        if row and row[0] == boot:
            self._rebuilt_boot = boot
            return True
        started = time.monotonic()
        after = ""
        total = 0
        while not self._stop.is_set():
            rows = self._fetch_latest(after)
            if not rows:
                break
            if self._publish([r for _, r in rows]) < len(rows):
                return False  # connection trouble; start over on the next step
            total += len(rows)
            metrics.EVENTS_REPUBLISHED.inc(len(rows))
            after = rows[-1][0]
            if not self._drain():  # new events between chunks keep flowing, in order
                return False
        else:
            return False
        with self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO outbox_state (key, value, updated_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                (REBUILT_BOOT_KEY, boot),
            )
        self._rebuilt_boot = boot
        log.info(
            "retained state rebuilt for broker boot %s: %d analyses in %.2fs",
            boot,
            total,
            time.monotonic() - started,
        )
        return True

    def _fetch_latest(self, after: str) -> list[tuple[str, _Row]]:
        """The newest published, unexpired event of each analysis after ``after`` (keyset)."""
        assert self._conn is not None
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT ON (analysis_id) seq, user_id, analysis_id, payload, "
                "EXTRACT(EPOCH FROM expires_at - now()), 0 "
                "FROM events WHERE published_at IS NOT NULL AND expires_at > now() "
                "AND analysis_id > %s ORDER BY analysis_id, seq DESC LIMIT %s",
                (after, self._batch),
            )
            return [(r[2], self._row(*r)) for r in cur.fetchall()]
