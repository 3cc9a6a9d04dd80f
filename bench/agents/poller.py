"""Poller agent: the old "manual refresh" client, polling ``GET /plantanalyses/{id}``.

One thread and one keep-alive HTTP connection per waiting client; each starts at a random
phase and polls every ``interval`` seconds until it sees a final status, recording every
request (start and end, CLOCK_MONOTONIC).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from bench.agent import serve


def run(args: dict[str, Any]) -> dict[str, Any]:
    base = urlsplit(args["base_url"])
    interval = float(args["interval"])
    give_up = time.monotonic() + float(args["max_seconds"])
    results: dict[str, dict[str, Any]] = {}

    def client(analysis_id: str, token: str) -> None:
        conn = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        path = f"{base.path.rstrip('/')}/plantanalyses/{analysis_id}"
        polls, request_ms, errors, starts = 0, [], 0, []
        seen: tuple[int, int] | None = None
        time.sleep(random.uniform(0, interval))
        next_at = time.monotonic()
        while time.monotonic() < give_up:
            t0 = time.monotonic_ns()
            starts.append(t0)
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                status = json.loads(body).get("status") if response.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                errors += 1
                status = None
            t1 = time.monotonic_ns()
            polls += 1
            request_ms.append((t1 - t0) / 1e6)
            if status in ("Completed", "Failed"):
                seen = (t0, t1)
                break
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()
        results[analysis_id] = {
            "polls": polls,
            "errors": errors,
            "seen_start_ns": seen[0] if seen else None,
            "seen_end_ns": seen[1] if seen else None,
            "request_ms": request_ms,
            "mean_interval_ms": (starts[-1] - starts[0]) / (len(starts) - 1) / 1e6
            if len(starts) > 1
            else None,
        }

    threads = [
        threading.Thread(target=client, args=(aid, token), daemon=True)
        for aid, token in args["clients"]
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"results": results}


if __name__ == "__main__":
    serve({"run": run})
