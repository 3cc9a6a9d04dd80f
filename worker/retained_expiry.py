"""Expired retained events leave the broker's memory: the worker clears them itself.

This sweeper publishes an empty retained message (which deletes the retained copy) on the topic
of every analysis whose newest event has expired, every ``every_seconds``. It runs on every
engine:

- MQTT 3.1.1 (the NATS engine) has no message expiry: without it a new subscriber would get
  events older than ``EVENT_EXPIRY_SECONDS``.
- On Mosquitto the worker publishes every event with an MQTT 5 message expiry, so a new
  subscriber never gets an expired event; but Mosquitto 2.0 (2.0.11 measured) only drops an
  expired retained message when something touches its topic (a matching SUBSCRIBE, a new
  publish). Analysis topics are never touched again, so without the sweeper every expired
  event stays in the broker's memory (and its persistence file) for good: the soak measured
  +64 % broker RSS in 15 minutes. After a clear, Mosquitto 2.0.11 still keeps the empty topic
  node (about 190 bytes an analysis, against ~775 for a 400-byte event it frees).

Subscribed devices receive the empty message (QoS 1, not retained) and ignore it, as the
contract asks of every client.

- **Where it is**: a cursor (the highest ``events.seq`` swept) in ``outbox_state``, so each
  sweep reads only events that expired since the last one (``seq`` order is ``expires_at``
  order while the expiry setting is constant; a change only delays some clears to a later
  sweep).
- **One sweeper**: whoever holds the advisory lock ``(OUTBOX_LOCK_CLASS, 2)``; clearing twice is
  harmless anyway.
- **Never clears a live event**: an analysis with any event that has not expired (a newer one,
  published or not) is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import psycopg2
import psycopg2.extensions

from plantnotify.contracts.topics import analysis_topic
from plantnotify.mqtt import ConnectOptions, MqttClient, MqttError
from worker.presence import connect_raw
from worker.store import (
    sql_expired_published,
    sql_set_state,
    sql_state,
    sql_try_lock,
    sql_with_live_events,
)

log = logging.getLogger("plantnotify.worker.retained_expiry")

CURSOR_KEY = "retained_cleared_seq"
SWEEPER_LOCK_KEY = 2


class RetainedExpirySweeper:
    def __init__(
        self,
        database_url: str,
        mqtt_options: ConnectOptions,
        *,
        every_seconds: float = 60.0,
        batch_size: int = 500,
        puback_timeout: float = 10.0,
    ) -> None:
        self._url = database_url
        self._every = every_seconds
        self._batch = batch_size
        self._puback_timeout = puback_timeout
        self.mqtt = MqttClient(mqtt_options)
        self._stop = threading.Event()
        self._conn: psycopg2.extensions.connection | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> RetainedExpirySweeper:
        self.mqtt.start()
        self._thread = threading.Thread(target=self._run, name="retained-expiry", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.mqtt.stop()
        self._close()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                if self._lead():
                    self.sweep()
            except (psycopg2.Error, MqttError) as exc:
                log.warning(
                    "retained-expiry sweep failed (%s); next try in %.0fs", exc, self._every
                )
                self._close()

    def _lead(self) -> bool:
        if self._conn is None:
            self._conn = connect_raw(self._url, name="plantnotify-retained-expiry")
        with self._conn.cursor() as cur:
            return sql_try_lock(cur, SWEEPER_LOCK_KEY)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    def sweep(self) -> int:
        """Clear the retained copies of analyses whose newest event expired; returns how many."""
        if self._conn is None:
            self._conn = connect_raw(self._url, name="plantnotify-retained-expiry")
        self.mqtt.wait_connected(self._puback_timeout)
        cleared = 0
        while not self._stop.is_set():
            cursor = self._cursor()
            with self._conn.cursor() as cur:
                rows = sql_expired_published(cur, cursor, self._batch)
                if not rows:
                    break
                analyses = sorted({(r[1], r[2]) for r in rows})
                live = sql_with_live_events(cur, [a for _, a in analyses])
            handles = [
                self.mqtt.publish(analysis_topic(user, analysis), b"", qos=1, retain=True)
                for user, analysis in analyses
                if analysis not in live
            ]
            for handle in handles:
                handle.wait(self._puback_timeout)
            cleared += len(handles)
            self._set_cursor(max(r[0] for r in rows))
        if cleared:
            log.info("cleared %d expired retained event(s)", cleared)
        return cleared

    def _cursor(self) -> int:
        assert self._conn is not None
        with self._conn.cursor() as cur:
            value = sql_state(cur, [CURSOR_KEY]).get(CURSOR_KEY)
        return int(value) if value else 0

    def _set_cursor(self, seq: int) -> None:
        assert self._conn is not None
        with self._conn.cursor() as cur:
            sql_set_state(cur, CURSOR_KEY, str(seq))
