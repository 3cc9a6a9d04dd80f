"""The outbox publisher: events committed in PostgreSQL -> retained QoS-1 MQTT messages.

- **Source of truth**: ``events`` rows with ``published_at IS NULL``, in ``seq`` order. A row is
  marked published only after the broker's PUBACK; a crash in between publishes it again
  (clients de-duplicate on ``eventId``).
- **Partitions** (per-analysis order, publishing shared by processes): an event belongs to
  partition ``hashtext(analysis_id) mod OUTBOX_PARTITIONS`` (fixed), so all events of one
  analysis are in one partition. Each partition has its own leader: the process holding the
  session-level advisory lock ``(OUTBOX_LOCK_CLASS, PARTITION_KEY_BASE + k)``. Every publisher
  process is a *member* (it holds ``(OUTBOX_LOCK_CLASS, 1)`` in shared mode: an older,
  single-leader publisher holds it exclusively, so the two designs never publish at once) and
  takes its fair share, ``ceil(partitions / members)``, every second: one that holds more
  gives the extras back (with nothing in flight), one that holds fewer takes free ones. When a
  leader dies PostgreSQL frees its locks with its connection and the others take its
  partitions over within about a second, publishing whatever it had left.
- **Pipelined**: a process publishes its partitions over ``OUTBOX_CONNECTIONS`` MQTT
  connections, partition ``k`` always over connection ``k mod OUTBOX_CONNECTIONS`` (so one
  analysis's events go out in order on one connection), in ``seq`` order. The broker lets one
  connection have only its Receive Maximum (20 for our Mosquitto) PUBLISHes unacknowledged, so
  on a busy machine, where a PUBACK takes tens of milliseconds to come back, one connection
  caps the rate at a few hundred per second; several keep more in flight. The next batch is fetched while the previous one's PUBACKs are still coming; the
  acknowledged prefix is marked published with one UPDATE. If a publish fails, only the prefix
  before it is marked, so nothing is ever re-sent out of order (a retained message must never
  go back to an older event).
- **Woken at once**: in-process by :meth:`wake` (right after a commit) and across processes by
  ``NOTIFY plantnotify_events`` (a trigger on ``events``, delivered at commit); no poll
  interval: the periodic sweep is only the safety net.
- **Broker restarts**: the broker's plugin retains a ``BrokerBoot`` with a fresh ``bootId`` on
  every start. When a leader sees a boot id other than the one whose state was last rebuilt for
  its partition (kept in ``outbox_state``), it re-publishes the latest unexpired event of every
  analysis of that partition, with its remaining expiry, so the broker's retained state matches
  the database again even when the broker lost it (Mosquitto only saves to disk every
  ``autosave_interval``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions

from plantnotify.contracts.events import BrokerBoot, InvalidPayload, parse_event
from plantnotify.contracts.topics import BROKER_BOOT_TOPIC, analysis_topic
from plantnotify.mqtt import ConnectOptions, Message, MqttClient, MqttError
from plantnotify.mqtt.client import PublishHandle
from worker import metrics, stages
from worker.presence import connect_raw
from worker.store import (
    OUTBOX_PARTITIONS,
    sql_fetch_latest,
    sql_fetch_unpublished,
    sql_join,
    sql_lag_seconds,
    sql_listen,
    sql_mark_published,
    sql_members,
    sql_rebuilt_boots,
    sql_release_partition,
    sql_set_rebuilt_boot,
    sql_try_partition,
)

log = logging.getLogger("plantnotify.worker.outbox")

# The partition, lock keys and queries live in worker/store.py (the worker's SQL, in one place).
FINAL_EVENTS = ("AnalysisCompleted", "AnalysisFailed")


@dataclass(frozen=True, slots=True)
class _Row:
    seq: int
    topic: str
    payload: bytes
    expiry: int  # seconds left; <= 0: expired, not published
    age: float  # seconds since the commit
    analysis_id: str = ""
    partition: int = 0
    final: bool = False  # Completed/Failed (stage-timed by the bench)


def render(payload: dict[str, Any]) -> bytes:
    """The wire bytes of a stored event (contract field order; validated on the way out)."""
    try:
        return parse_event(payload).to_json_bytes()
    except InvalidPayload:
        log.warning("stored event does not match the contract models; sending it as stored")
        return json.dumps(payload, separators=(",", ":")).encode()


def fair_share(members: int) -> int:
    """Partitions one of ``members`` publisher processes leads."""
    return math.ceil(OUTBOX_PARTITIONS / max(1, members))


def _empty(sock: socket.socket) -> None:
    """Read a wake-up socket dry."""
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass


class _Failed(Exception):
    """A publish was refused or not acknowledged: stop, publish again later (in order)."""


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
        connections: int = 1,
    ) -> None:
        self._url = database_url
        self._batch = batch_size
        self._sweep = sweep_seconds
        self._leader_retry = min(leader_retry_seconds, sweep_seconds)
        self._puback_timeout = puback_timeout
        options = mqtt_options
        if not any(topic == BROKER_BOOT_TOPIC for topic, _ in options.subscriptions):
            options.subscriptions.append((BROKER_BOOT_TOPIC, 1))
        # PUBACKs (and failed publishes) poke this socket pair, so the publisher can wait for
        # them and for new commits at once.
        self._acks_r, self._acks_w = socket.socketpair()
        self._acks_r.setblocking(False)
        self._acks_w.setblocking(False)
        self.mqtt = MqttClient(
            options,
            on_message=self._on_mqtt_message,
            max_inflight=1000,
            on_settled=self._acked_now,
        )
        # Publishing lanes: the first connection (which also follows the broker's boot) and
        # more of the same identity, each with a client id of its own.
        self._lanes = [self.mqtt] + [
            MqttClient(
                dataclasses.replace(
                    options, client_id=f"{options.client_id}-{i}", subscriptions=[]
                ),
                max_inflight=1000,
                on_settled=self._acked_now,
            )
            for i in range(1, max(1, connections))
        ]
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conn: psycopg2.extensions.connection | None = None
        self._leader = threading.Event()
        self._owned: list[int] = []  # partitions this process leads (publisher thread only)
        self._next_rebalance = 0.0
        self._boot_lock = threading.Lock()
        self._seen_boot: str | None = None
        self._rebuilt: dict[int, str] = {}  # partition -> boot whose state it rebuilt
        self._more = False  # the last drain stopped with rows left (time budget)
        self._thread: threading.Thread | None = None

    # --- control (any thread) -------------------------------------------------------------

    def start(self, *, lead: bool = True) -> OutboxPublisher:
        """Connect, and (unless ``lead`` is False: fault injection) take a share of partitions."""
        for lane in self._lanes:
            lane.start()
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
            self._stop_lanes()
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("outbox publisher did not stop within %.0fs", timeout)
            self._thread = None
        self._stop_lanes()
        for sock in (self._wake_r, self._wake_w, self._acks_r, self._acks_w):
            sock.close()

    def _stop_lanes(self) -> None:
        for lane in self._lanes:
            lane.stop()

    def wait_connected(self, timeout: float) -> None:
        """Wait until every publishing connection is up (raises as ``MqttClient`` does)."""
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            lane.wait_connected(max(0.0, deadline - time.monotonic()))

    @property
    def connected(self) -> bool:
        return all(lane.is_connected for lane in self._lanes)

    def _acked_now(self) -> None:
        with contextlib.suppress(OSError):
            self._acks_w.send(b"!")

    def wake(self) -> None:
        """Publish now (called right after an event commit in this process)."""
        # A full buffer means it is woken already; a closed socket means we are stopping.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")

    @property
    def is_leader(self) -> bool:
        """This process leads at least one partition."""
        return self._leader.is_set()

    @property
    def partitions(self) -> list[int]:
        """The partitions this process leads right now."""
        return list(self._owned)

    def wait_leader(self, timeout: float) -> bool:
        return self._leader.wait(timeout)

    def wait_partitions(self, count: int, timeout: float) -> bool:
        """Wait until this process leads ``count`` partitions (tests, rebalancing)."""
        deadline = time.monotonic() + timeout
        while len(self._owned) != count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

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
                if self._join():
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

    def _join(self) -> bool:
        """Become a publisher member (keeping one idle connection between tries)."""
        if self._conn is None:
            self._conn = connect_raw(self._url, name="plantnotify-outbox")
        with self._conn.cursor() as cur:
            if not sql_join(cur):
                return False
            sql_listen(cur)
        self._next_rebalance = 0.0
        return True

    def _rebalance(self) -> None:
        """Take this process's fair share of the partitions; give back what is over it.

        Runs between drains, so nothing of a partition given back is in flight."""
        now = time.monotonic()
        if now < self._next_rebalance:
            return
        self._next_rebalance = now + self._leader_retry
        assert self._conn is not None
        before = list(self._owned)
        with self._conn.cursor() as cur:
            share = fair_share(sql_members(cur))
            while len(self._owned) > share:
                k = self._owned.pop()
                sql_release_partition(cur, k)
            if len(self._owned) < share:
                # Start at a different place in every process, so joiners don't collide.
                offset = os.getpid() % OUTBOX_PARTITIONS
                for i in range(OUTBOX_PARTITIONS):
                    k = (offset + i) % OUTBOX_PARTITIONS
                    if k in self._owned:
                        continue
                    if sql_try_partition(cur, k):
                        self._owned.append(k)
                        self._rebuilt.pop(k, None)  # find out again whether it needs one
                        if len(self._owned) >= share:
                            break
        self._owned.sort()
        if self._owned != before:
            log.info(
                "outbox partitions led by this process (pid %d): %s",
                os.getpid(),
                ",".join(map(str, self._owned)) or "none",
            )
            self.wake()
        if self._owned:
            self._leader.set()
        else:
            self._leader.clear()
        metrics.OUTBOX_LEADER.set(1 if self._owned else 0)
        metrics.OUTBOX_PARTITIONS_LED.set(len(self._owned))

    def _resign(self) -> None:
        """Leaving :meth:`_lead` means the connection failed or we stop: drop it (and the locks)."""
        was_leader = self._leader.is_set()
        self._leader.clear()
        self._owned = []
        self._rebuilt.clear()
        metrics.OUTBOX_LEADER.set(0)
        metrics.OUTBOX_PARTITIONS_LED.set(0)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        if was_leader and not self._stop.is_set():
            log.warning("outbox leadership lost; trying to take it again")

    def _lead(self) -> None:
        conn = self._conn
        assert conn is not None
        self._rebalance()
        done = self._step()
        while not self._stop.is_set():
            # psycopg2 reads NOTIFYs off the socket whenever it runs a query, so one that
            # arrived while the last step ran its queries sits in conn.notifies and select()
            # will not wake for it; its event may have committed after the step's last SELECT
            # (the bench saw such events wait for the sweep, 5 s). Step again at once then.
            if conn.notifies or self._more:
                timeout = 0.0
            else:
                timeout = self._sweep if done else 0.2
                timeout = min(timeout, max(0.0, self._next_rebalance - time.monotonic()))
            conn.notifies.clear()
            readable, _, _ = select.select([conn, self._wake_r], [], [], timeout)
            if conn in readable:
                conn.poll()  # raises if the connection (and so the leadership) is gone
                conn.notifies.clear()
            if self._wake_r in readable:
                _empty(self._wake_r)
            if time.monotonic() >= self._next_rebalance:
                self._rebalance()  # also checks the connection (and our locks) is alive
            done = self._step()

    def _step(self) -> bool:
        """Drain our partitions and rebuild retained state if needed; True when all is done."""
        if not self._owned:
            self._more = False
            return True
        if not self.connected:
            self._update_lag()
            return False
        drained = self._drain()
        if drained and self._rebuild_pending():
            drained = self._rebuild_if_needed() and self._drain()
        if drained and not self._more:
            metrics.OUTBOX_LAG.set(0)
        else:
            self._update_lag()
        return drained

    # --- publishing -----------------------------------------------------------------------

    def _drain(self, budget: float = 1.0) -> bool:
        """Publish unpublished events of our partitions in ``seq`` order; False on a failure.

        A pipeline: the next batch is fetched and published while the PUBACKs of the previous
        ones are still coming; the acknowledged prefix is marked published. Returns after about
        ``budget`` seconds with ``self._more`` set if rows are left (so rebalancing and the
        broker's boot are looked at), and only with nothing in flight."""
        assert self._conn is not None
        inflight: deque[tuple[_Row, PublishHandle | None]] = deque()
        cursor = 0
        more = True
        deadline = time.monotonic() + budget
        self._more = False
        try:
            while not self._stop.is_set():
                if more and len(inflight) < 2 * self._batch:
                    if time.monotonic() > deadline:
                        self._more = True
                        more = False
                    else:
                        rows = self._fetch_unpublished(cursor)
                        more = len(rows) == self._batch
                        if rows:
                            cursor = rows[-1].seq
                            self._publish_rows(rows, inflight)
                full = more and len(inflight) >= 2 * self._batch
                if not more and not self._more and inflight:
                    # Caught up with PUBACKs still coming: mark rows as they are acknowledged,
                    # but go and fetch at once when something new is committed meanwhile (it
                    # must not wait for the previous events' PUBACKs and their mark).
                    more = self._settle_until_work(inflight)
                    continue
                # Pipeline full: wait for the oldest PUBACK at least.
                settled = self._settle(inflight, wait=not more, wait_first=full)
                if settled:
                    self._mark(settled)
                if not inflight and not more:
                    return True
            return False
        except _Failed:
            return False
        finally:
            # Whatever was acknowledged before a failure or a stop is marked; the rest is
            # published again (in order) by whoever leads next.
            settled = []
            while inflight and self._acked(inflight[0][1]):
                settled.append(inflight.popleft()[0])
            if settled and self._conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    self._mark(settled)

    def _settle_until_work(self, inflight: deque[tuple[_Row, PublishHandle | None]]) -> bool:
        """Mark rows as their PUBACKs arrive until none is in flight (False) or until this
        process commits an event or a NOTIFY says another did (True: fetch again)."""
        assert self._conn is not None
        conn = self._conn
        deadline = time.monotonic() + self._puback_timeout
        while inflight and not self._stop.is_set():
            settled = self._settle(inflight, wait=False)
            if settled:
                self._mark(settled)
                continue
            if conn.notifies:  # read off the socket by our own queries
                conn.notifies.clear()
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                self._settle(inflight, wait=True)  # raises _Failed if still unacknowledged
                continue
            readable, _, _ = select.select([self._acks_r, self._wake_r, conn], [], [], left)
            if self._acks_r in readable:
                _empty(self._acks_r)
            if conn in readable:
                conn.poll()
                if conn.notifies:
                    conn.notifies.clear()
                    return True
            if self._wake_r in readable:
                _empty(self._wake_r)
                return True
        return False

    def _publish_rows(
        self, rows: list[_Row], inflight: deque[tuple[_Row, PublishHandle | None]]
    ) -> None:
        for row in rows:
            if row.expiry <= 0:
                inflight.append((row, None))  # expired before it could go out: nothing to send
                continue
            lane = self._lanes[row.partition % len(self._lanes)]
            try:
                handle = lane.publish(row.topic, row.payload, qos=1, retain=True, expiry=row.expiry)
            except MqttError as exc:
                metrics.PUBLISH_FAILURES.labels(kind="not_connected").inc()
                log.info("publish paused: %s", exc)
                raise _Failed from None
            if row.final and stages.enabled:
                stages.record(row.analysis_id, "written")
            inflight.append((row, handle))

    @staticmethod
    def _acked(handle: PublishHandle | None) -> bool:
        if handle is None:
            return True
        if not handle.done:
            return False
        try:
            handle.wait(0)
        except MqttError:
            return False
        return True

    def _settle(
        self,
        inflight: deque[tuple[_Row, PublishHandle | None]],
        *,
        wait: bool,
        wait_first: bool = False,
    ) -> list[_Row]:
        """Pop the acknowledged prefix; with ``wait``, wait for all of it (``wait_first``: for
        its first row)."""
        settled: list[_Row] = []
        while inflight:
            row, handle = inflight[0]
            if handle is not None:
                if not handle.done and not wait and not (wait_first and not settled):
                    break
                try:
                    handle.wait(self._puback_timeout)
                except MqttError as exc:
                    metrics.PUBLISH_FAILURES.labels(kind="not_acknowledged").inc()
                    log.info("publish not acknowledged (%s); will publish again", exc)
                    if settled:
                        self._mark(settled)
                    raise _Failed from None
                if row.final and stages.enabled:
                    stages.record(row.analysis_id, "puback", handle.acked_ns)
            settled.append(inflight.popleft()[0])
        return settled

    def _mark(self, rows: list[_Row]) -> None:
        assert self._conn is not None
        with self._conn.cursor() as cur:
            sql_mark_published(cur, [r.seq for r in rows])
        metrics.EVENTS_PUBLISHED.inc(sum(1 for r in rows if r.expiry > 0))
        for r in rows:
            metrics.OUTBOX_DELAY.observe(r.age)

    def _fetch_unpublished(self, after_seq: int) -> list[_Row]:
        assert self._conn is not None
        with self._conn.cursor() as cur:
            rows = [
                self._row(*r)
                for r in sql_fetch_unpublished(cur, self._owned, after_seq, self._batch)
            ]
        if stages.enabled:
            for r in rows:
                if r.final:
                    stages.record(r.analysis_id, "read")
        return rows

    @staticmethod
    def _row(
        seq: int,
        user_id: str,
        analysis_id: str,
        payload: Any,
        left: Any,
        age: Any,
        partition: int,
    ) -> _Row:
        if isinstance(payload, str):
            payload = json.loads(payload)
        return _Row(
            seq=seq,
            topic=analysis_topic(user_id, analysis_id),
            payload=render(payload),
            expiry=math.floor(float(left)),
            age=max(0.0, float(age)),
            analysis_id=analysis_id,
            partition=int(partition),
            final=payload.get("event") in FINAL_EVENTS,
        )

    def _update_lag(self) -> None:
        if self._conn is None:
            return
        with self._conn.cursor() as cur:
            metrics.OUTBOX_LAG.set(sql_lag_seconds(cur))

    # --- retained state after a broker restart --------------------------------------------

    def _rebuild_pending(self) -> bool:
        with self._boot_lock:
            boot = self._seen_boot
        return boot is not None and any(self._rebuilt.get(k) != boot for k in self._owned)

    def _rebuild_if_needed(self) -> bool:
        """Re-publish the latest event of every analysis of our partitions for a new broker
        boot; True when done."""
        with self._boot_lock:
            boot = self._seen_boot
        if boot is None:
            return True
        assert self._conn is not None
        todo = [k for k in self._owned if self._rebuilt.get(k) != boot]
        with self._conn.cursor() as cur:
            for k, done_boot in sql_rebuilt_boots(cur, todo).items():
                if done_boot == boot:
                    self._rebuilt[k] = boot
        for k in todo:
            if self._rebuilt.get(k) == boot:
                continue
            if not self._rebuild_partition(k, boot):
                return False
        return True

    def _rebuild_partition(self, k: int, boot: str) -> bool:
        assert self._conn is not None
        started = time.monotonic()
        after = ""
        total = 0
        while not self._stop.is_set():
            with self._conn.cursor() as cur:
                rows = [self._row(*r) for r in sql_fetch_latest(cur, k, after, self._batch)]
            if not rows:
                break
            inflight: deque[tuple[_Row, PublishHandle | None]] = deque()
            try:
                self._publish_rows(rows, inflight)
                self._settle(inflight, wait=True)
            except _Failed:
                return False  # connection trouble; start over on the next step
            total += len(rows)
            metrics.EVENTS_REPUBLISHED.inc(len(rows))
            after = rows[-1].analysis_id
            if not self._drain():  # new events between chunks keep flowing, in order
                return False
        else:
            return False
        with self._conn.cursor() as cur:
            sql_set_rebuilt_boot(cur, k, boot)
        self._rebuilt[k] = boot
        log.info(
            "retained state of outbox partition %d rebuilt for broker boot %s: "
            "%d analyses in %.2fs",
            k,
            boot,
            total,
            time.monotonic() - started,
        )
        return True
