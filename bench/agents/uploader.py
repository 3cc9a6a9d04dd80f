"""Uploader agent: farmers uploading photos through the real API at a fixed rate.

``POST /api/v1/plantanalyses/async`` (multipart, one pre-built JPEG) from a pool of threads,
each with its own keep-alive connection; request ``i`` is due at ``start + i / rate`` and is
sent by whichever thread is free (a late request is sent at once, so the offered rate holds as
long as the API answers within ``threads / rate`` seconds). Nothing is sent after
``max_seconds`` (an API slower than the offered rate is measured, not waited for). Records per
accepted upload the analysis id and CLOCK_MONOTONIC when its 202 arrived.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from bench.agent import serve

BOUNDARY = "plantnotifybenchboundary"


def _body(image: bytes) -> bytes:
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="image"; filename="leaf.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def run(args: dict[str, Any]) -> dict[str, Any]:
    base = urlsplit(args["base_url"])
    path = base.path.rstrip("/") + "/plantanalyses/async"
    tokens: list[str] = list(args["tokens"])
    body = _body(base64.b64decode(args["image_b64"]))
    rate = float(args["rate"])
    count = int(args["count"])
    threads = int(args.get("threads", 16))
    ticket = itertools.count()
    lock = threading.Lock()
    accepted: dict[str, int] = {}
    errors: dict[str, int] = {}
    start = time.monotonic() + 0.05
    stop_at = start + float(args.get("max_seconds", count / rate * 2 + 5))

    def sender() -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            with lock:
                i = next(ticket)
            if i >= count or time.monotonic() > stop_at:
                break
            due = start + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            token = tokens[i % len(tokens)]
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port)
                conn.request(
                    "POST",
                    path,
                    body=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                    },
                )
                response = conn.getresponse()
                data = response.read()
                now = time.monotonic_ns()
                if response.status == 202:
                    analysis_id = json.loads(data)["analysisId"]
                    with lock:
                        accepted[analysis_id] = now
                else:
                    with lock:
                        errors[str(response.status)] = errors.get(str(response.status), 0) + 1
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    pool = [threading.Thread(target=sender, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    span = (max(accepted.values()) / 1e9 - start) if accepted else 0.0
    return {
        "accepted": accepted,
        "not_sent": max(0, count - len(accepted) - sum(errors.values())),
        "errors": errors,
        "achieved_rate": len(accepted) / span if span > 0 else None,
    }


if __name__ == "__main__":
    serve({"run": run})
