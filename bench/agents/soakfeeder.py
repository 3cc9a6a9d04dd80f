"""Soak feeder agent: analyses as an upload creates them, at a fixed rate, through faults.

Per analysis, as the API does: the ``Processing`` row and its image in PostgreSQL, then the
``AnalysisJob`` on RabbitMQ with publisher confirms (``JobPublisher``, the API's own). When
PostgreSQL or RabbitMQ is down (restarted by the soak) the step is retried every 0.2 s until it
succeeds, so no analysis is skipped: the schedule falls behind and catches up. An analysis
counts as *created* once both steps succeeded; those are what must all end Completed/Failed.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
import uuid
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url

from bench.agent import serve
from plantnotify.amqp.errors import QueueUnavailable
from plantnotify.amqp.publisher import JobPublisher
from plantnotify.contracts.queues import AnalysisJob

_state: dict[str, Any] = {}
_created: list[tuple[str, str]] = []
_lock = threading.Lock()
_thread: threading.Thread | None = None
_retries = {"database": 0, "queue": 0}


def _dsn(url: str) -> dict[str, Any]:
    u = make_url(url)
    return {
        "host": u.host or "127.0.0.1",
        "port": u.port or 5432,
        "user": u.username or "postgres",
        "dbname": u.database,
        "application_name": "plantnotify-bench-soak-feeder",
    }


def _sender(args: dict[str, Any], ticket: itertools.count[int], start: float) -> None:
    users: list[str] = args["users"]
    rate, seconds = float(args["rate"]), float(args["seconds"])
    image = base64.b64decode(args["image_b64"])
    dsn = _dsn(args["database_url"])
    publisher = JobPublisher(args["rabbitmq_url"], app_id="plantnotify-bench-soak")
    conn: Any = None
    while True:
        with _lock:
            i = next(ticket)
        due = start + i / rate
        if due - start >= seconds:
            break
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        aid, uid = str(uuid.uuid4()), users[i % len(users)]
        while True:
            try:
                if conn is None:
                    conn = psycopg2.connect(**dsn, connect_timeout=3)
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO analyses (id, user_id, status, mime_type, image_size, "
                        "queued_at) VALUES (%s, %s, 'Processing', 'image/jpeg', %s, now())",
                        (aid, uid, len(image)),
                    )
                    cur.execute(
                        "INSERT INTO analysis_images (analysis_id, data) VALUES (%s, %s)",
                        (aid, image),
                    )
                break
            except psycopg2.Error:
                _retries["database"] += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.2)
        while True:
            try:
                publisher.publish(AnalysisJob(analysis_id=aid, user_id=uid))
                break
            except QueueUnavailable:
                _retries["queue"] += 1
                time.sleep(0.2)
        with _lock:
            _created.append((aid, uid))
    publisher.close()
    if conn is not None:
        conn.close()


def start(args: dict[str, Any]) -> dict[str, Any]:
    global _thread
    ticket = itertools.count()
    begin = time.monotonic() + 0.1
    threads = [
        threading.Thread(target=_sender, args=(args, ticket, begin), daemon=True)
        for _ in range(int(args.get("threads", 8)))
    ]
    for t in threads:
        t.start()

    def join() -> None:
        for t in threads:
            t.join()

    _thread = threading.Thread(target=join, daemon=True)
    _thread.start()
    return {}


def status(args: dict[str, Any]) -> dict[str, Any]:
    with _lock:
        return {"created": len(_created), "retries": dict(_retries)}


def finish(args: dict[str, Any]) -> dict[str, Any]:
    if _thread is not None:
        _thread.join(float(args.get("timeout", 600)))
    with _lock:
        return {"created": list(_created), "retries": dict(_retries)}


if __name__ == "__main__":
    serve({"start": start, "status": status, "finish": finish})
