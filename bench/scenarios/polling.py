"""Baseline (a): clients polling ``GET /plantanalyses/{id}`` every 5 s ("manual refresh").

Real API, real database: the bench registers users through the API, creates one analysis per
user as an upload does (``Processing``; directly in the database, since an upload would queue a
job for the bench's worker), then every waiting client polls its analysis while the committer
completes each one after its own analysis time (2-5 minutes in production), exactly as the
worker's result transaction would.

Time is scaled honestly: poll interval and analysis times are both divided by the same factor
S, so polls per notification and the poll phase are the same as in real time. Detection
latency in real time = (where the commit fell in its client's poll cycle) x 5 s + the duration
of the request that saw the result (which is not scaled). Scaling compresses the API's load S times (S x more
requests per second than the same clients would send in real time), which makes request
times here pessimistic, not optimistic.
"""

from __future__ import annotations

import random
import secrets
from pathlib import Path

import httpx

from bench.context import BenchContext
from bench.plots import figure, save
from bench.results import ScenarioResult
from bench.stack import our_stack, start_service
from bench.stats import summarize

NAME = "polling"
REQUIRES = ("api.main",)
NEEDS_SERVICES = True  # a throwaway database and vhost
TITLE = "Polling GET /plantanalyses/{id} every 5 s (the old manual refresh)"
POLL_SECONDS = 5.0
ANALYSIS_MINUTES = (2.0, 5.0)


def steps(quick: bool) -> int:
    return 5


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    scale = ctx.pick(100.0, 25.0)
    clients_n = ctx.pick(5, 40)
    ctx.step("database, vhost, broker")
    stack = our_stack(ctx)
    settings = stack.settings
    port = settings.api_port
    ctx.step("starting plantnotify api")
    api = start_service(ctx, "polling-api", ["api"], settings, ready_port=port, wait=False)
    committer = ctx.agent("committer", "polling-committer")
    api.wait_ready()
    base = f"http://127.0.0.1:{port}/api/v1"

    ctx.step(f"{clients_n} users, each waiting for an analysis")
    users: list[str] = []
    tokens: dict[str, str] = {}
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(clients_n):
            username, password = f"poller{i}_{ctx.run_id}", secrets.token_urlsafe(12)
            r = http.post("/auth/register", json={"username": username, "password": password})
            r.raise_for_status()
            r = http.post("/auth/login", json={"username": username, "password": password})
            r.raise_for_status()
            login = r.json()
            users.append(login["userId"])
            tokens[login["userId"]] = login["accessToken"]
    # The analyses are created as an upload creates them (Processing, owned by the user), but
    # in the database directly: an upload would also queue a job for the bench's shared worker.
    committer.call("connect", database_url=settings.database_url)
    committer.call(
        "prepare",
        users=users,
        prefix=f"poll-{ctx.run_id}-",
        count=clients_n,
        image_base=f"{base}/plantanalyses",
    )
    jobs = [(f"poll-{ctx.run_id}-{i}", users[i]) for i in range(clients_n)]
    tokens = {aid: tokens[uid] for aid, uid in jobs}

    ctx.step("polling while the analyses complete")
    lo, hi = (m * 60 / scale for m in ANALYSIS_MINUTES)
    delays = [random.uniform(lo, hi) for _ in jobs]
    interval = POLL_SECONDS / scale
    poller = ctx.agent("poller", "pollers")
    poller.send(
        "run",
        base_url=base,
        interval=interval,
        max_seconds=hi + 30,
        clients=[(aid, tokens[aid]) for aid, _ in jobs],
    )
    committed = committer.call(
        "run", timeout=hi + 120, prefix=f"poll-{ctx.run_id}-", delays=delays
    )["committed"]
    polled = poller.recv(timeout=hi + 120)["results"]

    ctx.step("summarising")
    detect_real_s: list[float] = []
    detect_scaled_ms: list[float] = []
    polls: list[float] = []
    request_ms: list[float] = []
    missed = 0
    gaps: list[float] = []
    for aid, _ in jobs:
        p = polled.get(aid)
        t_commit = committed.get(aid)
        if p is None or t_commit is None or p["seen_start_ns"] is None:
            missed += 1
            continue
        request_ms += p["request_ms"]
        polls.append(p["polls"])
        if p["mean_interval_ms"] is not None:
            gaps.append(p["mean_interval_ms"])
        own_ns = p["seen_end_ns"] - p["seen_start_ns"]
        detect_scaled_ms.append((p["seen_end_ns"] - t_commit) / 1e6)
        # Where the commit fell in the poll cycle: the next poll starts phase x interval later.
        # (A poll already in flight at the commit may see it; in real time, with requests
        # ~1,000x shorter than the interval, that is the poll starting right then, so the
        # phase wraps to the next start rather than counting a negative wait.)
        interval_ns = (p["mean_interval_ms"] or interval * 1000) * 1e6
        phase = ((p["seen_start_ns"] - t_commit) % interval_ns) / interval_ns
        detect_real_s.append(phase * POLL_SECONDS + own_ns / 1e9)
    total_s = hi + 1
    result.series = {
        "detect_real_s": [round(x, 3) for x in detect_real_s],
        "polls": polls,
        "detect_scaled": summarize(detect_scaled_ms),
        "request": summarize(request_ms),
    }
    real = summarize([x * 1000 for x in detect_real_s])
    m = result.metrics
    m["latency_p50_s"] = round(real["p50"] / 1000, 3) if real.get("count") else None
    m["latency_p99_s"] = round(real["p99"] / 1000, 3) if real.get("count") else None
    m["requests_per_notification"] = round(sum(polls) / len(polls), 1) if polls else None
    m["request_ms_p99"] = result.series["request"].get("p99")
    m["api_requests_per_s_measured"] = round(len(request_ms) / total_s, 1)
    m["real_requests_per_s_per_1000_waiting"] = 1000 / POLL_SECONDS
    m["notifications"] = len(polls)
    m["poll_interval_ms_nominal"] = round(interval * 1000, 1)
    m["poll_interval_ms_measured"] = round(sum(gaps) / len(gaps), 1) if gaps else None
    if gaps and abs(sum(gaps) / len(gaps) / (interval * 1000) - 1) > 0.1:
        result.notes.append(
            "the clients could not keep the scaled poll interval (busy machine or slow API): "
            "real-time latencies derived from this run are off by that much"
        )
    m["never_seen"] = missed
    result.notes.append(
        f"{clients_n} clients, one analysis each; time scale S = {scale:g} (poll every "
        f"{interval * 1000:.0f} ms for a real {POLL_SECONDS:g} s; analyses {lo:.1f}-{hi:.1f} s "
        f"for a real {ANALYSIS_MINUTES[0]:g}-{ANALYSIS_MINUTES[1]:g} min). Latencies are given "
        "in real time (see module doc); requests per notification need no scaling."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    import numpy as np

    fig, axes = figure("Polling every 5 s: what a notification costs", ncols=2, width=4.6)
    xs = np.sort(np.array(result.series["detect_real_s"]))
    axes[0].plot(xs, np.arange(1, len(xs) + 1) / max(1, len(xs)), color="#c44e52")
    axes[0].set_xlabel("completion → client knows (s, real time)")
    axes[0].set_ylabel("fraction of notifications")
    axes[0].set_title("detection latency (CDF)", fontsize=9)
    axes[1].hist(result.series["polls"], bins=20, color="#dd8452")
    axes[1].set_xlabel("GET requests per notification")
    axes[1].set_title("requests per notification (MQTT: 0)", fontsize=9)
    return [save(fig, out_dir / f"{NAME}.png")]
