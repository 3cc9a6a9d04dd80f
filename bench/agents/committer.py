"""Committer agent: commits finished analyses at a fixed rate, as the worker does.

Each commit is the worker's result transaction: the analysis row becomes ``Completed`` and its
``AnalysisCompleted`` event is inserted into ``events`` (the outbox; its trigger NOTIFYs the
outbox publisher at commit). The commit time is taken when COMMIT returns, i.e. when the event
is durable and visible: that is where the end-to-end latency starts.

Several threads, each with its own connection, share the schedule round-robin: one PostgreSQL
commit (with its WAL flush) takes ~1-2 ms here, so one connection alone could not offer
thousands per second. With ``group`` (the ``sustained`` scenario), a thread that finds several
jobs due commits them together: one transaction, one UPDATE and one INSERT for the group, one
WAL flush (a group commit, as a worker may do: each result is still durable when COMMIT
returns). That is what lets one agent offer 2,000 commits/s on a busy 2-core machine; the
commit time of every job of a group is the group's COMMIT.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg2
from psycopg2.extras import execute_values
from sqlalchemy.engine import make_url

from bench.agent import serve
from plantnotify.contracts.events import AnalysisCompleted

_dsn: dict[str, Any] = {}
_prepared: dict[str, list[tuple[str, str, str, str]]] = {}

UPDATE = (
    "UPDATE analyses SET status = 'Completed', crop_type = %s, primary_concern = %s, "
    "overall_health_score = %s, result = %s, lease_owner = NULL, lease_expires_at = NULL, "
    "completed_at = now(), updated_at = now() WHERE id = %s AND status = 'Processing'"
)
INSERT = (
    "INSERT INTO events (id, user_id, analysis_id, type, payload, expires_at) "
    "VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s))"
)
# The group forms of UPDATE and INSERT: one statement each for all jobs of a group.
GROUP_UPDATE = (
    "UPDATE analyses SET status = 'Completed', crop_type = %s, primary_concern = %s, "
    "overall_health_score = %s, result = %s, lease_owner = NULL, lease_expires_at = NULL, "
    "completed_at = now(), updated_at = now() WHERE id = ANY(%s) AND status = 'Processing'"
)
GROUP_INSERT = (
    "INSERT INTO events (id, user_id, analysis_id, type, payload, expires_at) "
    "SELECT e, u, a, 'AnalysisCompleted', p::jsonb, now() + make_interval(secs => %s) "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS g(e, u, a, p)"
)
MAX_GROUP = 200
CROP, CONCERN, SCORE = "tomato", "Early blight", 72
RESULT = {"cropType": CROP, "primaryConcern": CONCERN, "overallHealthScore": SCORE}


def _connect() -> Any:
    return psycopg2.connect(**_dsn)


def connect(args: dict[str, Any]) -> dict[str, Any]:
    url = make_url(args["database_url"])
    _dsn.update(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        dbname=url.database,
        application_name="plantnotify-bench-committer",
    )
    if url.password:
        _dsn["password"] = url.password
    _connect().close()
    return {}


def _job(aid: str, uid: str, image_base: str) -> tuple[str, str, str, str]:
    event = AnalysisCompleted(
        analysis_id=aid,
        user_id=uid,
        crop_type=CROP,
        primary_concern=CONCERN,
        overall_health_score=SCORE,
        image_url=f"{image_base}/{aid}/image",
    )
    return aid, uid, event.event_id, json.dumps(event.to_wire())


def prepare(args: dict[str, Any]) -> dict[str, Any]:
    """Create ``count`` analyses in ``Processing`` (keys ``prefix0``...) and their events."""
    users: list[str] = args["users"]
    prefix, count = str(args["prefix"]), int(args["count"])
    image_base = str(args.get("image_base", "http://127.0.0.1:8000/api/v1/plantanalyses"))
    rows = [(f"{prefix}{i}", users[i % len(users)]) for i in range(count)]
    jobs = [_job(aid, uid, image_base) for aid, uid in rows]
    conn = _connect()
    with conn, conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO analyses (id, user_id, status, mime_type, image_size) VALUES %s",
            rows,
            template="(%s, %s, 'Processing', 'image/jpeg', 1024)",
            page_size=1000,
        )
    conn.close()
    _prepared[prefix] = jobs
    return {"prepared": count}


def adopt(args: dict[str, Any]) -> dict[str, Any]:
    """Prepare events for analyses that already exist (made through the API)."""
    image_base = str(args.get("image_base", "http://127.0.0.1:8000/api/v1/plantanalyses"))
    _prepared[str(args["prefix"])] = [_job(aid, uid, image_base) for aid, uid in args["jobs"]]
    return {"prepared": len(args["jobs"])}


def run(args: dict[str, Any]) -> dict[str, Any]:
    """Commit the prepared jobs at ``rate``/s, or each at its own ``delays[i]`` seconds;
    ``group``: the jobs due at once in one transaction."""
    prefix = str(args["prefix"])
    rate = float(args.get("rate") or 1.0)
    delays: list[float] = args.get("delays") or []
    threads_n = int(args.get("threads", 8))
    expiry = int(args.get("expiry_seconds", 7 * 86400))
    jobs = _prepared.pop(prefix)
    count = len(jobs)
    if delays:
        # Threads take jobs in order, so order them by due time.
        order = sorted(range(count), key=lambda k: delays[k])
        jobs = [jobs[k] for k in order]
        offsets = [int(delays[k] * 1e9) for k in order]
    else:
        offsets = [int(i * 1e9 / rate) for i in range(count)]
    committed: dict[str, int] = {}
    committed_wall: dict[str, int] = {}  # time.time_ns(), for services that log wall time
    commit_ms: list[float] = []
    lags: list[float] = []
    errors: list[str] = []
    groups: list[int] = []
    conns = [_connect() for _ in range(threads_n)]
    result_json = json.dumps(RESULT)
    start = time.monotonic_ns() + 50_000_000  # all threads ready before the first is due
    next_job = [0]  # group mode: the first job no thread has taken yet
    take = threading.Lock()

    def grouped(t: int) -> None:
        """Take every job that is due (at least the next one, waiting for it), commit them
        together."""
        conn = conns[t]
        cur = conn.cursor()
        while True:
            with take:
                first = next_job[0]
                if first >= count:
                    return
                due = start + offsets[first]
                now = time.monotonic_ns()
                if due > now:
                    time.sleep((due - now) / 1e9)
                    now = time.monotonic_ns()
                last = first + 1
                while last < count and last - first < MAX_GROUP and start + offsets[last] <= now:
                    last += 1
                next_job[0] = last
            group = jobs[first:last]
            t0 = time.monotonic_ns()
            lags.extend((t0 - start - offsets[i]) / 1e6 for i in range(first, last))
            try:
                cur.execute(
                    GROUP_UPDATE, (CROP, CONCERN, SCORE, result_json, [g[0] for g in group])
                )
                cur.execute(
                    GROUP_INSERT,
                    (
                        expiry,
                        [g[2] for g in group],
                        [g[1] for g in group],
                        [g[0] for g in group],
                        [g[3] for g in group],
                    ),
                )
                conn.commit()
            except psycopg2.Error as exc:
                conn.rollback()
                errors.append(str(exc).strip()[:200])
                continue
            t1 = time.monotonic_ns()
            wall = time.time_ns()
            for aid, _, _, _ in group:
                committed_wall[aid] = wall
                committed[aid] = t1
            commit_ms.append((t1 - t0) / 1e6)
            groups.append(len(group))

    def worker(t: int) -> None:
        conn = conns[t]
        cur = conn.cursor()
        for i in range(t, count, threads_n):
            due = start + offsets[i]
            now = time.monotonic_ns()
            if due > now:
                time.sleep((due - now) / 1e9)
            aid, uid, event_id, payload = jobs[i]
            t0 = time.monotonic_ns()
            lags.append((t0 - due) / 1e6)
            try:
                cur.execute(
                    UPDATE,
                    (CROP, CONCERN, SCORE, result_json, aid),
                )
                cur.execute(INSERT, (event_id, uid, aid, "AnalysisCompleted", payload, expiry))
                conn.commit()
            except psycopg2.Error as exc:
                conn.rollback()
                errors.append(str(exc).strip()[:200])
                continue
            t1 = time.monotonic_ns()
            committed_wall[aid] = time.time_ns()
            committed[aid] = t1
            commit_ms.append((t1 - t0) / 1e6)

    target = grouped if args.get("group") else worker
    threads = [threading.Thread(target=target, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = (time.monotonic_ns() - start) / 1e9
    for conn in conns:
        conn.close()
    commit_ms.sort()
    lags.sort()
    return {
        "committed": committed,
        "committed_wall": committed_wall,
        "errors": errors[:5],
        "error_count": len(errors),
        "seconds": elapsed,
        "achieved_rate": len(committed) / elapsed if elapsed > 0 else None,
        "commit_ms_p50": commit_ms[len(commit_ms) // 2] if commit_ms else None,
        "commit_ms_p99": commit_ms[int(len(commit_ms) * 0.99)] if commit_ms else None,
        "schedule_lag_p99_ms": lags[int(len(lags) * 0.99)] if lags else None,
        "transactions": len(commit_ms),
        "mean_group": sum(groups) / len(groups) if groups else None,
    }


def bulk(args: dict[str, Any]) -> dict[str, Any]:
    """Commit every prepared job in ONE transaction: a backlog the outbox then drains."""
    jobs = _prepared.pop(str(args["prefix"]))
    expiry = int(args.get("expiry_seconds", 7 * 86400))
    conn = _connect()
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE analyses SET status = 'Completed', completed_at = now(), updated_at = now() "
            "WHERE id = ANY(%s)",
            ([aid for aid, _, _, _ in jobs],),
        )
        execute_values(
            cur,
            "INSERT INTO events (id, user_id, analysis_id, type, payload, expires_at) VALUES %s",
            [(eid, uid, aid, "AnalysisCompleted", payload) for aid, uid, eid, payload in jobs],
            template=f"(%s, %s, %s, %s, %s, now() + make_interval(secs => {expiry}))",
            page_size=1000,
        )
        t0 = time.monotonic_ns()
        conn.commit()
        t1 = time.monotonic_ns()
    conn.close()
    return {"committed_ns": t1, "commit_ms": (t1 - t0) / 1e6, "count": len(jobs)}


if __name__ == "__main__":
    serve({"connect": connect, "prepare": prepare, "adopt": adopt, "run": run, "bulk": bulk})
