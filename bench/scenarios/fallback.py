"""Fallback: how fast an offline user's event becomes an FCM push, and pushes per second.

The whole path, started by the bench: database, vhost, our broker, one worker (outbox), one
``plantnotify bridge`` and ``plantnotify fcm-emulator`` (FCM HTTP v1 on loopback, reached
through firebase-admin like Google's endpoint). Users have a registered device and no MQTT
session. The committer commits their Completed analyses as the worker would; the emulator
records when each push arrived.

- Decision latency: analysis commit -> the bridge's final decision (``push_decisions.decided_at``,
  so it includes the outbox publish and the bridge seeing the event and deciding "offline");
  and commit -> the push request arriving at the emulator; at a steady rate below capacity.
- Pushes per second: a burst of events for offline users, pushes accepted per second by the
  emulator (first to last), and from the first commit to the last push.
Commit and arrival are wall-clock times (the emulator records ``time.time()``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bench.context import BenchContext
from bench.plots import figure, save
from bench.results import Report, ScenarioResult
from bench.stack import our_stack, start_service
from bench.stats import summarize
from plantnotify.db.session import make_engine

NAME = "fallback"
REQUIRES = ("worker.outbox", "devtools.fcm_emulator", "bridge.service")
NEEDS_SERVICES = True  # a throwaway database and vhost
TITLE = "Offline users: event → FCM push decision, pushes per second"
USERS = [f"off{i}" for i in range(50)]


def steps(quick: bool) -> int:
    return 6


def _wait_in_sync(metrics_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = httpx.get(metrics_url, timeout=2).text
            if "plantnotify_bridge_session_picture_in_sync 1.0" in body:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the bridge did not get in sync with the broker's sessions in time")


def _pushes(emulator: str, expect: int, wait: float) -> dict[str, float]:
    """analysisId -> arrival (unix seconds) of the pushes seen by the emulator."""
    deadline = time.monotonic() + wait
    found: dict[str, float] = {}
    while True:
        items = httpx.get(f"{emulator}/messages", timeout=30).json()
        found = {}
        for item in items:
            aid = item.get("message", {}).get("data", {}).get("analysisId")
            if aid and aid not in found:
                found[aid] = float(item["receivedAt"])
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _decided_at(database_url: str, prefix: str) -> dict[str, float]:
    """analysisId -> when the bridge recorded its final decision (unix seconds)."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT analysis_id, EXTRACT(EPOCH FROM decided_at) FROM push_decisions "
                    "WHERE analysis_id LIKE :p AND decided_at IS NOT NULL"
                ),
                {"p": prefix + "%"},
            ).all()
    finally:
        engine.dispose()
    return {str(a): float(t) for a, t in rows}


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    steady_rate, steady_seconds = ctx.pick((20, 1.0), (10, 20.0))
    burst = ctx.pick(60, 1000)
    ctx.step("database, vhost, broker, worker")
    stack = our_stack(ctx)
    settings = stack.settings
    database_url = settings.database_url
    fcm_port, bridge_metrics = settings.fcm_emulator_port, settings.metrics_port_bridge
    ctx.step("starting fcm-emulator and bridge")
    emulator = f"http://127.0.0.1:{fcm_port}"
    # Started together (each spends seconds importing), then waited for.
    services = [
        start_service(
            ctx,
            "fallback-fcm-emulator",
            ["fcm-emulator", "--port", str(fcm_port)],
            settings,
            ready_port=fcm_port,
            wait=False,
        ),
        start_service(
            ctx, "fallback-bridge", ["bridge"], settings, ready_port=bridge_metrics, wait=False
        ),
    ]
    committer = ctx.agent("committer", "fallback-committer")
    for service in [*services, stack.worker]:
        service.wait_ready()
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO devices (token, user_id, platform) VALUES (:t, :u, 'android')"),
            [{"t": f"bench-device-{u}-{ctx.run_id}", "u": u} for u in USERS],
        )
    engine.dispose()
    _wait_in_sync(f"http://127.0.0.1:{bridge_metrics}/metrics", 60)
    committer.call("connect", database_url=database_url)

    def commit(prefix: str, rate: float, count: int) -> dict[str, Any]:
        committer.call("prepare", timeout=300, users=USERS, prefix=prefix, count=count)
        return committer.call("run", timeout=count / rate * 10 + 120, prefix=prefix, rate=rate)

    ctx.step("warm-up")
    commit("fb-warm-", 20, 20)
    _pushes(emulator, 20, 30)
    httpx.delete(f"{emulator}/messages", timeout=10)

    ctx.step(f"{steady_rate} offline events/s for {steady_seconds:.0f} s")
    count = int(steady_rate * steady_seconds)
    answer = commit("fb-steady-", steady_rate, count)
    pushes = _pushes(emulator, count, 60)
    latency_ms = [
        (pushes[aid] * 1e9 - t) / 1e6
        for aid, t in answer["committed_wall"].items()
        if aid in pushes
    ]
    steady = {**summarize(latency_ms), "missing": count - len(latency_ms)}
    decided = _decided_at(database_url, "fb-steady-")
    decision_ms = [
        (decided[aid] * 1e9 - t) / 1e6
        for aid, t in answer["committed_wall"].items()
        if aid in decided
    ]
    decision = {**summarize(decision_ms), "missing": count - len(decision_ms)}
    httpx.delete(f"{emulator}/messages", timeout=10)

    ctx.step(f"burst of {burst} offline events")
    answer = commit("fb-burst-", 5000, burst)
    pushes = _pushes(emulator, burst, 300)
    arrivals = sorted(pushes.values())
    first_commit = min(answer["committed_wall"].values()) / 1e9
    burst_out: dict[str, Any] = {
        "events": burst,
        "pushed": len(arrivals),
        "commit_rate": round(answer["achieved_rate"] or 0, 1),
    }
    if len(arrivals) > 1:
        burst_out["pushes_per_s_at_emulator"] = round(
            (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), 1
        )
        burst_out["pushes_per_s_from_first_commit"] = round(
            len(arrivals) / (arrivals[-1] - first_commit), 1
        )
    result.series = {
        "decision": decision,
        "decision_latency_ms": [round(x, 2) for x in decision_ms],
        "steady": steady,
        "steady_latency_ms": [round(x, 2) for x in latency_ms],
        "burst": burst_out,
    }
    m = result.metrics
    m["decision_p50_ms"] = decision.get("p50")
    m["decision_p99_ms"] = decision.get("p99")
    m["decision_missing"] = decision["missing"]
    m["push_p50_ms"] = steady.get("p50")
    m["push_p99_ms"] = steady.get("p99")
    m["push_missing"] = steady["missing"]
    m["pushes_per_s"] = burst_out.get("pushes_per_s_at_emulator")
    m["pushes_per_s_end_to_end"] = burst_out.get("pushes_per_s_from_first_commit")
    result.notes.append(
        f"{len(USERS)} offline users with one registered device each; steady {steady_rate}/s "
        f"for {steady_seconds:.0f} s, then a burst of {burst} committed as fast as the committer "
        "can; one worker, one bridge (FCM_CONCURRENCY default), emulator on loopback."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    import numpy as np

    fig, ax = figure("Offline user: analysis commit → push decision → FCM (steady rate)")
    for key, label, colour in (
        ("decision_latency_ms", "commit → decision", "#4c72b0"),
        ("steady_latency_ms", "commit → push at FCM", "#dd8452"),
    ):
        xs = np.sort(np.array(result.series[key]))
        ax.plot(xs, np.arange(1, len(xs) + 1) / max(1, len(xs)), color=colour, label=label)
    ax.axvline(100, color="#c44e52", lw=0.8, label="100 ms target (p99)")
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction of pushes")
    ax.legend(fontsize=8)
    return [save(fig, out_dir / f"{NAME}.png")]


def explain_misses(report: Report) -> dict[str, str]:
    r = report.scenarios.get(NAME)
    if r is None or r.status != "ok":
        return {}
    m = r.metrics
    if m.get("decision_p99_ms") is not None and m["decision_p99_ms"] <= 100:
        return {}
    return {
        "push-decision": (
            f"decision p50 {m.get('decision_p50_ms')} ms, {m.get('decision_missing')} steady "
            f"events undecided within the wait; {m.get('pushes_per_s')} pushes/s (see the "
            "bridge's log in bench/results/logs)"
        )
    }
