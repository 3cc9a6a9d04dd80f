"""Worker liveness through PostgreSQL: each worker process holds one advisory lock for life.

A lease (``analyses.lease_owner`` / ``lease_expires_at``) says who works on an analysis and until
when. When that worker is SIGKILLed, RabbitMQ redelivers its job at once, but the lease would
still look live for up to a lease period. PostgreSQL drops a dead client's session (and its
advisory locks) as soon as the socket closes, so "the owner's presence lock is gone" lets the
next worker take over immediately; the lease expiry stays the fallback for a worker that is
alive but stuck (it stops renewing).

Owner ids look like ``<host>-<pid>-<key as 8 hex digits>``; the key is the lock's second half.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import make_url

log = logging.getLogger("plantnotify.worker.presence")

PRESENCE_LOCK_CLASS = 0x504E5752  # "PNWR": plantnotify worker presence
OUTBOX_LOCK_CLASS = 0x504E4F42  # "PNOB": plantnotify outbox publisher (see worker/outbox.py)


def libpq_dsn(database_url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string, for raw psycopg2 connections."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def connect_raw(database_url: str, *, name: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(libpq_dsn(database_url), application_name=name, connect_timeout=5)
    conn.autocommit = True
    return conn


def new_owner_id() -> str:
    key = secrets.randbelow(2**31 - 2) + 1
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:48]
    return f"{host}-{os.getpid()}-{key:08x}"


def owner_key(owner: str) -> int | None:
    """The presence-lock key inside an owner id, or None for an id of another shape."""
    _, _, tail = owner.rpartition("-")
    if len(tail) != 8:
        return None
    try:
        return int(tail, 16)
    except ValueError:
        return None


class Presence:
    """Holds this worker's presence lock on a dedicated connection, re-taking it if lost."""

    def __init__(self, database_url: str, owner: str) -> None:
        key = owner_key(owner)
        if key is None:
            raise ValueError(f"owner id {owner!r} carries no presence key")
        self.owner = owner
        self._key = key
        self._url = database_url
        self._conn: psycopg2.extensions.connection | None = None
        self._lock = threading.Lock()

    def ensure(self) -> bool:
        """Take the lock if we don't hold it (start-up, or after losing the connection)."""
        with self._lock:
            if self._conn is not None:
                try:
                    with self._conn.cursor() as cur:
                        cur.execute("SELECT 1")
                    return True
                except psycopg2.Error:
                    log.warning("presence connection lost; taking the presence lock again")
                    self._close()
            try:
                conn = connect_raw(self._url, name="plantnotify-worker-presence")
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", (PRESENCE_LOCK_CLASS, self._key)
                    )
                    row = cur.fetchone()
                if not row or not row[0]:
                    conn.close()
                    log.error("presence lock of %s is held by someone else", self.owner)
                    return False
                self._conn = conn
                return True
            except psycopg2.Error as exc:
                log.warning("cannot take the presence lock: %s", str(exc).strip())
                return False

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
