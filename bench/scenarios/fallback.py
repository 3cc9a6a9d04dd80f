"""Fallback: offline users' push decisions alone and beside online traffic, and pushes per second.

The whole path, started by the bench: database, vhost, our broker, the workers (a second one
in the full run, sharing the outbox), ``plantnotify bridge`` (two of one share group in the
full run) and ``plantnotify fcm-emulator`` (FCM HTTP v1 on loopback, reached through
firebase-admin like Google's endpoint). Two kinds of users:

- offline users: no MQTT session, one registered FCM device each; every event is a push;
- online users: one MQTT/TCP device each (a live session the bridge sees through the plugin's
  snapshots), no FCM device; their events are what the bridge must take in and keep up with
  (a grace period each, then "no devices").

Measured, each with its baseline in the same run:

- Decision latency: analysis commit -> the bridge's final decision (``push_decisions.
  decided_at``: includes the outbox publish and the bridge seeing the event and deciding
  "offline") and commit -> the push request arriving at the emulator, for offline events
  (a) alone at a steady rate (the baseline) and (b) beside online users' events committed at
  the same time at ``online`` events/s. Beside (b): commit -> the decision row for the online
  events (``push_decisions.created_at``: the bridge took the event in), events taken in per
  second, and commit -> the online users' devices (the floor for anything decided from MQTT).
- Pushes per second: a burst of offline events committed in one transaction; pushes accepted
  per second by the emulator (first to last), against firebase-admin sending as many messages
  straight to the same emulator from ``FCM_CONCURRENCY`` threads (the baseline).
Commit and arrival are wall-clock times (the emulator records ``time.time()``).
"""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bench.context import BenchContext
from bench.plots import figure, save
from bench.results import Report, ScenarioResult
from bench.stack import Service, device_agent, our_stack, start_service
from bench.stats import latencies_ms, ratio, summarize
from plantnotify.db.session import make_engine
from plantnotify.net import free_port
from plantnotify.settings import Settings

NAME = "fallback"
REQUIRES = ("worker.outbox", "devtools.fcm_emulator", "bridge.service")
NEEDS_SERVICES = True  # a throwaway database and vhost
TITLE = "Offline users: push decision alone and beside online traffic, pushes/s vs firebase-admin"
USERS = [f"off{i}" for i in range(50)]
# Each bridge sends its pushes from processes of its own (FCM_SENDER_PROCESSES), each with
# FCM_CONCURRENCY sends in flight; the direct baseline is one process of FCM_CONCURRENCY threads.
SENDER_PROCESSES = 1
# Bridges in the full run, one share group (BRIDGE_SHARE_GROUP): each takes in part of the events.
BRIDGES = 2
ONLINE = [f"on{i}" for i in range(100)]


def steps(quick: bool) -> int:
    return 7


def _metric(url: str, name: str) -> float | None:
    try:
        body = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _wait_metric(url: str, name: str, at_least: float, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = _metric(url, name)
        if value is not None and value >= at_least:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the bridge did not {what} in time")


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


def _decision_times(database_url: str, prefix: str) -> dict[str, tuple[float, float | None]]:
    """analysisId -> (decision row created, final decision or None), unix seconds."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT analysis_id, EXTRACT(EPOCH FROM created_at), "
                    "EXTRACT(EPOCH FROM decided_at) FROM push_decisions WHERE analysis_id LIKE :p"
                ),
                {"p": prefix + "%"},
            ).all()
    finally:
        engine.dispose()
    return {str(a): (float(c), None if d is None else float(d)) for a, c, d in rows}


def _published_times(database_url: str, prefix: str) -> dict[str, float]:
    """analysisId -> when the outbox marked its event published (after the PUBACK), unix s."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT analysis_id, EXTRACT(EPOCH FROM published_at) FROM events "
                    "WHERE analysis_id LIKE :p AND published_at IS NOT NULL"
                ),
                {"p": prefix + "%"},
            ).all()
    finally:
        engine.dispose()
    return {str(a): float(t) for a, t in rows}


def _between(start: dict[str, float], end: dict[str, float]) -> list[float]:
    """ms from ``start`` to ``end`` of the analyses in both."""
    return [(end[a] - t) * 1000 for a, t in start.items() if a in end]


def _rate(times: list[float]) -> float | None:
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None


def _wait_taken_in(database_url: str, prefix: str, count: int, timeout: float) -> float:
    """Until ``count`` decisions of ``prefix`` exist (or ``timeout``); the seconds waited."""
    t0 = time.monotonic()
    engine = make_engine(database_url, pool_size=1)
    try:
        while time.monotonic() - t0 < timeout:
            with engine.connect() as conn:
                n = conn.execute(
                    text("SELECT count(*) FROM push_decisions WHERE analysis_id LIKE :p"),
                    {"p": prefix + "%"},
                ).scalar_one()
            if n >= count:
                break
            time.sleep(0.5)
    finally:
        engine.dispose()
    return time.monotonic() - t0


def _since_commit(committed_wall: dict[str, int], at: dict[str, float]) -> list[float]:
    return [(at[aid] * 1e9 - t) / 1e6 for aid, t in committed_wall.items() if aid in at]


def _offline_latency(
    database_url: str, emulator: str, prefix: str, committed_wall: dict[str, int]
) -> tuple[dict[str, Any], list[float], dict[str, Any], list[float]]:
    """Commit -> decision and commit -> push at the emulator of offline events."""
    pushes = _pushes(emulator, len(committed_wall), 60)
    decided = {a: d for a, (_, d) in _decision_times(database_url, prefix).items() if d}
    decision_ms = _since_commit(committed_wall, decided)
    push_ms = _since_commit(committed_wall, pushes)
    httpx.delete(f"{emulator}/messages", timeout=10)
    return (
        {**summarize(decision_ms), "missing": len(committed_wall) - len(decision_ms)},
        decision_ms,
        {**summarize(push_ms), "missing": len(committed_wall) - len(push_ms)},
        push_ms,
    )


def _direct_baseline(settings: Settings, emulator: str, count: int, threads: int) -> dict[str, Any]:
    """firebase-admin straight to the emulator: ``count`` sends from ``threads`` threads."""
    from bridge.credentials import FcmTarget, ephemeral_service_account
    from bridge.fcm import FcmSender, build_message
    from plantnotify.contracts.events import AnalysisCompleted

    sa = ephemeral_service_account(f"{emulator}/token", settings.fcm_project_id, "bench@x.y")
    sender = FcmSender(FcmTarget(sa, emulator, ephemeral=True), timeout=10)
    msgs = [
        build_message(
            AnalysisCompleted(
                analysis_id=f"fb-direct-{i}",
                user_id="fbdirect",
                image_url="/i",
                crop_type="tomato",
                overall_health_score=72,
            ),
            "bench-direct-" + secrets.token_hex(6),
            ttl_seconds=settings.fcm_ttl_seconds,
        )
        for i in range(count)
    ]
    sender.send(msgs[0])  # the OAuth token and a connection, outside the timing
    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(sender.send, msgs))
    seconds = time.monotonic() - t0
    sent = sum(1 for r in results if r.message_id)
    return {"sent": sent, "seconds": round(seconds, 3), "pushes_per_s": round(sent / seconds, 1)}


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    alone_rate, alone_seconds = ctx.pick((20, 1.0), (10, 10.0))
    online_rate, offline_rate, mixed_seconds = ctx.pick((300, 20, 2.0), (2000, 100, 10.0))
    burst = ctx.pick(60, 1000)
    sender_processes = ctx.pick(1, SENDER_PROCESSES)  # quick: the path, not the numbers
    bridges = ctx.pick(1, BRIDGES)
    ctx.step("database, vhost, broker, worker")
    stack = our_stack(ctx)
    settings = stack.settings
    database_url = settings.database_url
    fcm_port, bridge_metrics = settings.fcm_emulator_port, settings.metrics_port_bridge
    metrics_url = f"http://127.0.0.1:{bridge_metrics}/metrics"
    ctx.step("starting fcm-emulator, bridge, online devices")
    emulator = f"http://127.0.0.1:{fcm_port}"
    # Started together (each spends seconds importing), then waited for.
    services: list[Service] = [
        start_service(
            ctx,
            "fallback-fcm-emulator",
            ["fcm-emulator", "--port", str(fcm_port)],
            settings,
            ready_port=fcm_port,
            wait=False,
        ),
    ]
    # Full run: BRIDGES bridges of one share group split the events (each its own sender
    # process); quick: one bridge.
    bridge_ports = [bridge_metrics] + [free_port() for _ in range(bridges - 1)]
    for n, port in enumerate(bridge_ports):
        update: dict[str, Any] = {
            "fcm_sender_processes": sender_processes,
            "metrics_port_bridge": port,
        }
        if bridges > 1:
            update["bridge_share_group"] = "bench"
        services.append(
            start_service(
                ctx,
                "fallback-bridge" + (f"{n + 1}" if n else ""),
                ["bridge"],
                settings.model_copy(update=update),
                ready_port=port,
                wait=False,
            )
        )
    if not ctx.quick:  # 2,000 events/s: two workers share the outbox (see sustained)
        worker2 = settings.model_copy(update={"metrics_port_worker": free_port()})
        services.append(
            start_service(
                ctx,
                "fallback-worker2",
                ["worker"],
                worker2,
                ready_port=worker2.metrics_port_worker,
                wait=False,
            )
        )
    committer = ctx.agent("committer", "fallback-committer")
    online_committer = ctx.agent("committer", "fallback-online-committer")
    for service in [*services, stack.worker]:
        service.wait_ready()
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO devices (token, user_id, platform) VALUES (:t, :u, 'android')"),
            [{"t": f"bench-device-{u}-{ctx.run_id}", "u": u} for u in USERS],
        )
    engine.dispose()
    for port in bridge_ports:
        _wait_metric(
            f"http://127.0.0.1:{port}/metrics",
            "plantnotify_bridge_session_picture_in_sync",
            1,
            60,
            "get in sync",
        )
    devices = device_agent(ctx, "fallback-online-devices", stack.broker.port, ONLINE)
    _wait_metric(metrics_url, "plantnotify_bridge_live_users", len(ONLINE), 60, "see them live")
    for c in (committer, online_committer):
        c.call("connect", database_url=database_url)

    def commit(prefix: str, rate: float, count: int) -> dict[str, Any]:
        committer.call("prepare", timeout=300, users=USERS, prefix=prefix, count=count)
        return committer.call("run", timeout=count / rate * 10 + 120, prefix=prefix, rate=rate)

    ctx.step("warm-up")
    commit("fb-warm-", 20, 20)
    _pushes(emulator, 20, 30)
    httpx.delete(f"{emulator}/messages", timeout=10)

    ctx.step(f"baseline: {alone_rate} offline events/s alone for {alone_seconds:.0f} s")
    answer = commit("fb-steady-", alone_rate, int(alone_rate * alone_seconds))
    decision, decision_ms, steady, latency_ms = _offline_latency(
        database_url, emulator, "fb-steady-", answer["committed_wall"]
    )

    ctx.step(
        f"{offline_rate} offline events/s beside {online_rate} online for {mixed_seconds:.0f} s"
    )
    n_on, n_off = int(online_rate * mixed_seconds), int(offline_rate * mixed_seconds)
    online_committer.call("prepare", timeout=600, users=ONLINE, prefix="fb-on-", count=n_on)
    committer.call("prepare", timeout=300, users=USERS, prefix="fb-mixed-", count=n_off)
    online: dict[str, Any] = {}

    def online_load() -> None:
        online.update(
            online_committer.call(
                "run",
                timeout=mixed_seconds * 10 + 120,
                prefix="fb-on-",
                rate=online_rate,
                # Group commits of the jobs due at once (as in ``sustained``): one commit per
                # event from 16 threads reached only 260-790 events/s on a loaded machine.
                threads=8,
                group=True,
            )
        )

    load = threading.Thread(target=online_load, name="online-load")
    load.start()
    mixed_answer = committer.call(
        "run", timeout=mixed_seconds * 10 + 120, prefix="fb-mixed-", rate=offline_rate, threads=2
    )
    load.join()
    mixed, mixed_ms, mixed_push, mixed_push_ms = _offline_latency(
        database_url, emulator, "fb-mixed-", mixed_answer["committed_wall"]
    )
    got = devices.call("collect", timeout=200, expect=len(online["committed"]), wait=30)
    floor_ms, _ = latencies_ms(online["committed"], got["received"])
    floor = summarize(floor_ms)
    taken = {a: c for a, (c, _) in _decision_times(database_url, "fb-on-").items()}
    # The bridge's own part: from the outbox's publish (events.published_at, set after the
    # PUBACK) to the decision; commit -> decision also holds the outbox's lag under this load.
    on_published = _published_times(database_url, "fb-on-")
    mixed_decided = {a: d for a, (_, d) in _decision_times(database_url, "fb-mixed-").items() if d}
    own = summarize(_between(_published_times(database_url, "fb-mixed-"), mixed_decided))
    own_intake = summarize(_between(on_published, taken))
    outbox_rate = _rate(list(on_published.values()))
    intake_ms = _since_commit(online["committed_wall"], taken)
    intake = {**summarize(intake_ms), "missing": len(online["committed_wall"]) - len(intake_ms)}
    created = sorted(taken.values())
    intake_rate = (len(created) - 1) / (created[-1] - created[0]) if len(created) > 1 else None

    # Pushes/s are compared with firebase-admin alone on an otherwise idle stack: the outbox
    # and the bridges first finish the online backlog (bounded), or the burst would be fed at
    # the backlog's pace.
    backlog_s = _wait_taken_in(
        database_url, "fb-on-", len(online["committed_wall"]), ctx.pick(10.0, 45.0)
    )

    ctx.step(f"burst of {burst} offline events")
    committer.call("prepare", timeout=300, users=USERS, prefix="fb-burst-", count=burst)
    t_commit = time.time()
    committer.call("bulk", timeout=120, prefix="fb-burst-")
    pushes = _pushes(emulator, burst, 300)
    arrivals = sorted(pushes.values())
    burst_out: dict[str, Any] = {"events": burst, "pushed": len(arrivals)}
    if len(arrivals) > 1:
        burst_out["pushes_per_s_at_emulator"] = round(
            (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), 1
        )
        burst_out["pushes_per_s_from_commit"] = round(len(arrivals) / (arrivals[-1] - t_commit), 1)

    ctx.step("baseline: firebase-admin straight to the emulator")
    direct = _direct_baseline(settings, emulator, burst, settings.fcm_concurrency)

    result.series = {
        "decision": decision,
        "decision_latency_ms": [round(x, 2) for x in decision_ms],
        "steady": steady,
        "steady_latency_ms": [round(x, 2) for x in latency_ms],
        "mixed_decision": mixed,
        "mixed_decision_latency_ms": [round(x, 2) for x in mixed_ms],
        "mixed_push": mixed_push,
        "mixed_push_latency_ms": [round(x, 2) for x in mixed_push_ms],
        "online_intake": intake,
        "online_intake_latency_ms": [round(x, 2) for x in intake_ms],
        "online_commit_to_device": floor,
        "burst": burst_out,
        "direct": direct,
    }
    m = result.metrics
    m["decision_p50_ms"] = decision.get("p50")
    m["decision_p99_ms"] = decision.get("p99")
    m["decision_missing"] = decision["missing"]
    m["push_p50_ms"] = steady.get("p50")
    m["push_p99_ms"] = steady.get("p99")
    m["push_missing"] = steady["missing"]
    m["online_rate_offered"] = online_rate
    m["online_rate_committed"] = round(online.get("achieved_rate") or 0, 1)
    m["mixed_decision_p50_ms"] = mixed.get("p50")
    m["mixed_decision_p99_ms"] = mixed.get("p99")
    m["mixed_decision_missing"] = mixed["missing"]
    m["mixed_push_p50_ms"] = mixed_push.get("p50")
    m["mixed_push_p99_ms"] = mixed_push.get("p99")
    m["online_intake_p50_ms"] = intake.get("p50")
    m["online_intake_p99_ms"] = intake.get("p99")
    m["online_intake_missing"] = intake["missing"]
    m["online_device_p50_ms"] = floor.get("p50")
    m["online_device_p99_ms"] = floor.get("p99")
    m["intake_events_per_s"] = None if intake_rate is None else round(intake_rate, 1)
    m["outbox_published_per_s"] = None if outbox_rate is None else round(outbox_rate, 1)
    m["mixed_publish_to_decision_p50_ms"] = own.get("p50")
    m["mixed_publish_to_decision_p99_ms"] = own.get("p99")
    m["online_publish_to_taken_in_p50_ms"] = own_intake.get("p50")
    m["online_publish_to_taken_in_p99_ms"] = own_intake.get("p99")
    m["backlog_wait_s"] = round(backlog_s, 1)
    m["pushes_per_s"] = burst_out.get("pushes_per_s_at_emulator")
    m["pushes_per_s_end_to_end"] = burst_out.get("pushes_per_s_from_commit")
    m["direct_pushes_per_s"] = direct["pushes_per_s"]
    r = ratio(m["pushes_per_s"], direct["pushes_per_s"])
    m["pushes_vs_direct"] = None if r is None else round(r, 2)
    result.notes.append(
        f"{len(USERS)} offline users (one FCM device each), {len(ONLINE)} online users (one "
        f"MQTT/TCP device each, no FCM device). Baseline: {alone_rate} offline events/s alone "
        f"for {alone_seconds:.0f} s; then {offline_rate}/s beside {online_rate} online events/s "
        f"for {mixed_seconds:.0f} s; then a burst of {burst} offline events in one commit. "
        f"{'One worker' if ctx.quick else 'Two workers'}, {bridges} bridge(s)"
        f"{' of one share group' if bridges > 1 else ''} (each FCM_SENDER_PROCESSES="
        f"{sender_processes}, FCM_CONCURRENCY={settings.fcm_concurrency}); direct baseline: "
        "firebase-admin "
        f"messaging.send from {settings.fcm_concurrency} threads to the same emulator."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    import numpy as np

    fig, ax = figure("Offline user: commit → push decision, alone and beside online traffic")
    for key, label, colour in (
        ("decision_latency_ms", "offline alone: commit → decision", "#4c72b0"),
        ("steady_latency_ms", "offline alone: commit → push at FCM", "#8172b2"),
        ("mixed_decision_latency_ms", "beside online load: commit → decision", "#dd8452"),
        ("online_intake_latency_ms", "online events: commit → taken in", "#55a868"),
    ):
        xs = np.sort(np.array(result.series.get(key) or [0.0]))
        ax.plot(xs, np.arange(1, len(xs) + 1) / max(1, len(xs)), color=colour, label=label)
    ax.axvline(100, color="#c44e52", lw=0.8, label="100 ms target (p99)")
    ax.set_xscale("log")
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction of events")
    ax.legend(fontsize=7)
    return [save(fig, out_dir / f"{NAME}.png")]


def explain_misses(report: Report) -> dict[str, str]:
    r = report.scenarios.get(NAME)
    if r is None or r.status != "ok":
        return {}
    m = r.metrics
    why: dict[str, str] = {}
    if m.get("decision_p99_ms") is None or m["decision_p99_ms"] > 100:
        why["push-decision"] = (
            f"decision p50 {m.get('decision_p50_ms')} ms, {m.get('decision_missing')} steady "
            "events undecided within the wait (see the bridge's log in bench/results/logs)"
        )
    if m.get("mixed_decision_p99_ms") is None or m["mixed_decision_p99_ms"] > 100:
        why["push-decision-under-load"] = (
            f"bridge took in {m.get('intake_events_per_s')} events/s; online commit → taken in "
            f"p99 {m.get('online_intake_p99_ms')} ms, commit → device p99 "
            f"{m.get('online_device_p99_ms')} ms (see the bridge's log in bench/results/logs)"
        )
    if m.get("pushes_vs_direct") is None or m["pushes_vs_direct"] < 1.0:
        why["bridge-pushes-vs-direct"] = (
            f"{m.get('pushes_per_s')} pushes/s through the bridge, "
            f"{m.get('direct_pushes_per_s')} straight from firebase-admin"
        )
    return why
