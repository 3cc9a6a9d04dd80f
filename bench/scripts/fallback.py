"""Benchmark of the FCM fallback: push-decision latency for offline users, and pushes/s.

Runs the real parts as separate processes on free ports — our Mosquitto with the plugin,
``plantnotify fcm-emulator`` and ``plantnotify bridge`` — against a throw-away PostgreSQL
database, and produces events the way the worker does (outbox row, retained QoS-1 publish with
a service token, ``published_at``). Prints numbers; asserts nothing (not part of the suite).

Measured, for users with no live session:
  decision   publish → the bridge's final decision (``push_decisions.decided_at``)
  push       publish → the emulator accepted the FCM request (its own receive clock)
and, as baselines from the same run:
  mqtt       publish → a service subscriber receives the event (the floor for any decision
             taken from MQTT)
  direct     pushes/s of firebase-admin sending straight to the emulator from 8 threads (the
             ceiling for the bridge's FCM path on this machine)

    .venv/bin/python -m bench.scripts.fallback [--events 300] [--burst 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bridge.credentials import FcmTarget, ephemeral_service_account
from bridge.fcm import FcmSender, build_message
from plantnotify.broker.config import BrokerLayout, find_plugin
from plantnotify.broker.process import BrokerProcess
from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.events import AnalysisCompleted, utcnow
from plantnotify.contracts.topics import ALL_ANALYSES_FILTER, analysis_topic
from plantnotify.db.models import (
    Device,
    EventRow,
    PushAttempt,
    PushDecision,
    PushDelivery,
)
from plantnotify.db.session import drop_database, engine_for, migrate, session_factory
from plantnotify.mqtt import ConnectOptions, Credentials, MqttClient
from plantnotify.net import free_port
from plantnotify.settings import Settings, load_settings

GRACE = 2.0  # FALLBACK_GRACE_SECONDS of the benchmark's bridge (the failure cases use it)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def summary(name: str, values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (
        f"{name:<10} n={len(ms):<5} median {statistics.median(ms):7.1f} ms   "
        f"p99 {pct(ms, 99):7.1f} ms   max {max(ms):7.1f} ms"
    )


def service_client(settings: Settings, user: str, **kw: Any) -> MqttClient:
    def creds() -> Credentials:
        return Credentials(user, mint_mqtt_token(settings.mqtt_signer, user, 3600, service=True))

    c = MqttClient(
        ConnectOptions(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            client_id=f"{user}-{secrets.token_hex(3)}",
            credentials=creds,
            **kw,
        )
    ).start()
    c.wait_connected(15)
    return c


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FCM_", "BRIDGE_", "MQTT_"))}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = str(value)
    env.update(extra)
    return env


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()  # noqa: S310 (loopback)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def deliveries(emulator: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{emulator}/messages", timeout=10) as r:  # noqa: S310
        return list(json.load(r))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=300, help="events for the latency run")
    ap.add_argument("--rate", type=float, default=20.0, help="events/s in the latency run")
    ap.add_argument("--burst", type=int, default=1000, help="events for the throughput run")
    ap.add_argument("--backlog", type=int, default=5000, help="events for the catch-up run")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pn-bench-"))
    db_url = (
        f"postgresql+psycopg2://postgres@127.0.0.1:5432/plantnotify_bench_{secrets.token_hex(4)}"
    )
    emu_port, port, ws_port = free_port(), free_port(), free_port()
    emulator = f"http://127.0.0.1:{emu_port}"
    settings = load_settings(
        environment="development",
        database_url=db_url,
        jwt_secret=secrets.token_hex(32),
        mqtt_host="127.0.0.1",
        mqtt_port=port,
        mqtt_ws_port=ws_port,
        mqtt_data_dir=tmp / "mosquitto",
        fcm_endpoint=emulator,
        fallback_grace_seconds=GRACE,
        log_level="WARNING",
    )
    migrate(db_url)
    factory = session_factory(engine_for(db_url))
    procs: list[subprocess.Popen[bytes]] = []
    broker = BrokerProcess(
        settings,
        BrokerLayout(port, ws_port, tmp / "mosquitto", find_plugin(settings)),
        log_path=tmp / "mosquitto.log",
    )
    try:
        broker.start()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "plantnotify.cli", "fcm-emulator", "--port", str(emu_port)],
                env=env_for(settings),
                stdout=(tmp / "emulator.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        wait_http(f"{emulator}/healthz")
        bridge_log = tmp / "bridge.log"

        def start_bridge() -> subprocess.Popen[bytes]:
            synced = (
                bridge_log.read_text(errors="replace").count("session picture in sync")
                if (bridge_log.exists())
                else 0
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "plantnotify.cli", "bridge", "--no-metrics"],
                env=env_for(settings, LOG_LEVEL="INFO", BRIDGE_INSTANCE="bench"),
                stdout=bridge_log.open("ab"),
                stderr=subprocess.STDOUT,
            )
            procs.append(proc)
            deadline = time.monotonic() + 60
            while bridge_log.read_text(errors="replace").count("session picture in sync") <= synced:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the bridge did not start:\n" + bridge_log.read_text()[-3000:])
                time.sleep(0.05)
            return proc

        bridge_proc = start_bridge()

        publisher = service_client(settings, "bench-worker")
        watcher_times: dict[str, float] = {}

        def on_message(m: Any) -> None:
            if not m.retain:
                with contextlib.suppress(ValueError, KeyError):
                    watcher_times[json.loads(m.payload)["eventId"]] = time.time()

        watcher = MqttClient(
            ConnectOptions(
                host=settings.mqtt_host,
                port=settings.mqtt_port,
                client_id=f"bench-watch-{secrets.token_hex(3)}",
                credentials=lambda: Credentials(
                    "bench-watch",
                    mint_mqtt_token(settings.mqtt_signer, "bench-watch", 3600, service=True),
                ),
                subscriptions=[(ALL_ANALYSES_FILTER, 1)],
            ),
            on_message=on_message,
        ).start()
        watcher.wait_connected(15)

        def make_events(n: int) -> list[AnalysisCompleted]:
            events = []
            with factory.begin() as s:
                for _ in range(n):
                    user = "b" + secrets.token_hex(5)
                    s.add(
                        Device(
                            token="ok-" + secrets.token_hex(10), user_id=user, platform="android"
                        )
                    )
                    e = AnalysisCompleted(
                        analysis_id=secrets.token_hex(8),
                        user_id=user,
                        image_url="/i",
                        crop_type="Tomato",
                        overall_health_score=70,
                    )
                    events.append(e)
                    s.add(
                        EventRow(
                            id=e.event_id,
                            user_id=user,
                            analysis_id=e.analysis_id,
                            type=str(e.event),
                            payload=e.to_wire(),
                            expires_at=utcnow() + timedelta(days=1),
                        )
                    )
            return events

        def publish(e: AnalysisCompleted) -> float:
            t0 = time.time()
            publisher.publish(
                analysis_topic(e.user_id, e.analysis_id), e.to_json_bytes(), qos=1, retain=True
            ).wait(10)
            with factory.begin() as s:
                s.execute(
                    update(EventRow).where(EventRow.id == e.event_id).values(published_at=utcnow())
                )
            return t0

        def collect(events: list[AnalysisCompleted], timeout: float) -> dict[str, float]:
            """Wait (polling the database, not the emulator) until every push is final, then
            read the emulator's receive times once."""
            ids = [e.event_id for e in events]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with factory() as s:
                    done = s.execute(
                        select(func.count())
                        .select_from(PushDelivery)
                        .where(
                            PushDelivery.event_id.in_(ids), PushDelivery.finished_at.is_not(None)
                        )
                    ).scalar_one()
                if done >= len(ids):
                    break
                time.sleep(0.5)
            wanted = set(ids)
            return {
                d["message"]["data"]["eventId"]: d["receivedAt"]
                for d in deliveries(emulator)
                if d["message"]["data"]["eventId"] in wanted
            }

        def phases(events: list[AnalysisCompleted]) -> None:
            """Where the time goes, from the bridge's own records."""
            with factory() as s:
                rows = s.execute(
                    select(
                        PushDecision.published_at,
                        PushDecision.decided_at,
                        PushAttempt.started_at,
                        PushAttempt.finished_at,
                    )
                    .join(PushDelivery, PushDelivery.event_id == PushDecision.event_id)
                    .join(PushAttempt, PushAttempt.delivery_id == PushDelivery.id)
                    .where(PushDecision.event_id.in_([e.event_id for e in events]))
                ).all()
            if rows:
                print(
                    summary(
                        "intake",
                        [(d - p).total_seconds() for p, d, _, _ in rows if d is not None],
                    ),
                    " (bridge saw it -> decided)",
                )
                print(
                    summary(
                        "queued",
                        [(a - d).total_seconds() for _, d, a, _ in rows if d is not None],
                    ),
                    " (decided -> FCM attempt started)",
                )
                print(
                    summary("send", [(f - a).total_seconds() for _, _, a, f in rows]),
                    " (one FCM HTTP attempt)",
                )

        # 1. latency, offline users, paced
        print(f"latency run: {args.events} events at {args.rate}/s, 1 device each, users offline")
        events = make_events(args.events)
        sent: dict[str, float] = {}
        for e in events:
            sent[e.event_id] = publish(e)
            time.sleep(1 / args.rate)
        pushed = collect(events, 60)
        with factory() as s:
            decided = dict(
                s.execute(
                    select(PushDecision.event_id, PushDecision.decided_at).where(
                        PushDecision.event_id.in_(list(sent))
                    )
                ).all()
            )
        decision_lat = [d.timestamp() - sent[k] for k in sent if (d := decided.get(k)) is not None]
        push_lat = [pushed[k] - sent[k] for k in sent if k in pushed]
        mqtt_lat = [watcher_times[k] - sent[k] for k in sent if k in watcher_times]
        print(summary("mqtt", mqtt_lat), " (baseline: publish -> a subscriber)")
        print(summary("decision", decision_lat))
        print(summary("push", push_lat))
        missing = len(events) - len(push_lat)
        print(
            f"           pushed {len(push_lat)}/{len(events)}; within 1 s: "
            f"{sum(1 for v in push_lat if v <= 1.0)}/{len(events)}; missing {missing}"
        )
        phases(events)

        # 2. throughput: a burst published as fast as the broker takes it
        print(f"\nthroughput run: {args.burst} events published back to back")
        burst = make_events(args.burst)
        t_start = time.time()
        handles = []
        for e in burst:
            handles.append(
                publisher.publish(
                    analysis_topic(e.user_id, e.analysis_id), e.to_json_bytes(), qos=1, retain=True
                )
            )
        for h in handles:
            h.wait(30)
        with factory.begin() as s:
            s.execute(
                update(EventRow)
                .where(EventRow.id.in_([e.event_id for e in burst]))
                .values(published_at=utcnow())
            )
        t_published = time.time()
        got = collect(burst, 180)
        if got:
            t_last = max(got.values())
            print(
                f"published in {t_published - t_start:.2f} s; {len(got)}/{len(burst)} pushed; "
                f"last push {t_last - t_start:.2f} s after the first publish"
            )
            print(
                f"bridge     {len(got) / (t_last - t_start):7.1f} pushes/s (publish -> FCM accepted)"
            )
            phases(burst)

        # 3. catch-up: a backlog committed while no bridge ran, then fresh events on top
        print(f"\ncatch-up run: {args.backlog} events published while the bridge was stopped")
        bridge_proc.terminate()
        bridge_proc.wait(30)
        backlog = make_events(args.backlog)
        with factory.begin() as s:
            s.execute(
                update(EventRow)
                .where(EventRow.id.in_([e.event_id for e in backlog]))
                .values(published_at=utcnow())
            )
        t_restart = time.time()
        bridge_proc = start_bridge()
        fresh = make_events(20)
        fresh_sent = {}
        for e in fresh:
            fresh_sent[e.event_id] = publish(e)
            time.sleep(0.1)
        ids = [e.event_id for e in backlog]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with factory() as s:
                left = s.execute(
                    select(func.count())
                    .select_from(EventRow)
                    .where(
                        EventRow.id.in_(ids),
                        ~select(PushDecision.event_id)
                        .where(
                            PushDecision.event_id == EventRow.id, PushDecision.state != "pending"
                        )
                        .exists(),
                    )
                ).scalar_one()
            if not left:
                break
            time.sleep(0.5)
        t_drained = time.time()
        pushed_backlog = collect(backlog, 600)
        t_pushed = max(pushed_backlog.values()) if pushed_backlog else float("nan")
        with factory() as s:
            decided = dict(
                s.execute(
                    select(PushDecision.event_id, PushDecision.decided_at).where(
                        PushDecision.event_id.in_(list(fresh_sent))
                    )
                ).all()
            )
        print(
            f"backlog    decided {t_drained - t_restart:.1f} s after the restart began "
            f"({args.backlog / (t_drained - t_restart):.0f} decisions/s, process start included)"
        )
        print(
            f"           {len(pushed_backlog)} backlog pushes handed to FCM "
            f"{t_pushed - t_restart:.1f} s after the restart began"
        )
        print(
            summary(
                "fresh",
                [
                    d.timestamp() - v
                    for k, v in fresh_sent.items()
                    if (d := decided.get(k)) is not None
                ],
            ),
            " (publish -> decision, during catch-up)",
        )

        # 4. failure cases, one at a time: what happens, measured
        print(f"\nfailure cases (FALLBACK_GRACE_SECONDS={GRACE:g}; times from the publish):")

        def one_user(prefix: str = "ok-") -> tuple[str, str]:
            user = "f" + secrets.token_hex(5)
            token = prefix + secrets.token_hex(8)
            with factory.begin() as s:
                s.add(Device(token=token, user_id=user, platform="android"))
            return user, token

        def one_event(user: str) -> AnalysisCompleted:
            e = AnalysisCompleted(analysis_id=secrets.token_hex(8), user_id=user, image_url="/i")
            with factory.begin() as s:
                s.add(
                    EventRow(
                        id=e.event_id,
                        user_id=user,
                        analysis_id=e.analysis_id,
                        type=str(e.event),
                        payload=e.to_wire(),
                        expires_at=utcnow() + timedelta(days=1),
                    )
                )
            return e

        def reread(s: Session) -> Session:
            """The session with everything it loaded forgotten (read the rows anew)."""
            s.expire_all()
            return s

        def until(check: Any, timeout: float = 30) -> float:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if check():
                    return time.time()
                time.sleep(0.01)
            return float("nan")

        def emulator_attempts(token: str) -> list[dict[str, Any]]:
            with urllib.request.urlopen(f"{emulator}/attempts", timeout=10) as r:  # noqa: S310
                return [a for a in json.load(r) if a.get("token") == token]

        def delivered(token: str) -> bool:
            return any(a["status"] == 200 for a in emulator_attempts(token))

        def decision_state(eid: str) -> str | None:
            with factory() as s:
                return s.execute(
                    select(PushDecision.state).where(PushDecision.event_id == eid)
                ).scalar()

        def phone(user: str) -> MqttClient:
            def creds() -> Credentials:
                return Credentials(user, mint_mqtt_token(settings.mqtt_signer, user, 600))

            c = MqttClient(
                ConnectOptions(
                    host=settings.mqtt_host,
                    port=settings.mqtt_port,
                    client_id=f"{user}-phone",
                    credentials=creds,
                    subscriptions=[(f"users/{user}/analyses/+", 1)],
                )
            ).start()
            c.wait_connected(10)
            time.sleep(0.5)  # the plugin's session snapshot reaches the bridge
            return c

        def report(name: str, text: str) -> None:
            print(f"  {name:<30} {text}")

        user, token = one_user("dead-")
        t0 = publish(one_event(user))
        with factory() as s:
            gone = until(lambda: reread(s).get(Device, token) is None)
        report("dead token (404 UNREGISTERED)", f"device removed after {gone - t0:.2f} s")

        user, token = one_user("quota-")
        t0 = publish(one_event(user))
        done = until(lambda: delivered(token))
        tries = emulator_attempts(token)
        gap = tries[1]["at"] - tries[0]["at"] if len(tries) > 1 else float("nan")
        report(
            "quota (429, Retry-After: 1)",
            f"{len(tries)} attempts {gap:.2f} s apart; delivered after {done - t0:.2f} s",
        )

        user, token = one_user("flaky-")
        t0 = publish(one_event(user))
        done = until(lambda: delivered(token))
        report("FCM 503 once", f"retried with back-off; delivered after {done - t0:.2f} s")

        user, token = one_user("exhaust-")
        t0 = publish(one_event(user))
        with factory() as s:
            ended = until(
                lambda: (
                    reread(s)
                    .execute(select(PushDelivery.status).where(PushDelivery.device_token == token))
                    .scalar()
                    == "exhausted"
                ),
                timeout=120,
            )
        report(
            "quota never clears",
            f"{len(emulator_attempts(token))} attempts, 'exhausted' after {ended - t0:.2f} s; "
            "device kept",
        )

        user, token = one_user()
        c = phone(user)
        e = one_event(user)
        t0 = publish(e)
        c.publish(f"users/{user}/receipts", json.dumps({"eventId": e.event_id}).encode()).wait(5)
        settled = until(lambda: decision_state(e.event_id) == "suppressed")
        time.sleep(GRACE + 0.5)
        report(
            "live, confirms",
            f"suppressed after {settled - t0:.2f} s; pushes: {len(emulator_attempts(token))}",
        )
        c.stop()

        user, token = one_user()
        c = phone(user)
        t0 = publish(one_event(user))
        done = until(lambda: delivered(token))
        report("live, silent (or half-open)", f"pushed after {done - t0:.2f} s")
        c.stop()

        user, token = one_user()
        c = phone(user)
        t0 = publish(one_event(user))
        time.sleep(0.3)
        t_gone = time.time()
        c.stop()
        done = until(lambda: delivered(token))
        report(
            "live, disconnects mid-grace",
            f"pushed {done - t_gone:.2f} s after the disconnect ({done - t0:.2f} s after publish)",
        )

        user, token = one_user()
        c = phone(user)
        t0 = publish(one_event(user))
        time.sleep(0.3)
        bridge_proc.kill()  # SIGKILL mid-grace
        bridge_proc.wait(10)
        time.sleep(GRACE + 1)
        t_restart = time.time()
        bridge_proc = start_bridge()
        done = until(lambda: delivered(token))
        time.sleep(1)
        report(
            "bridge SIGKILLed mid-grace",
            f"pushed {done - t_restart:.2f} s after the restart began; "
            f"pushes: {sum(1 for a in emulator_attempts(token) if a['status'] == 200)}",
        )
        c.stop()

        # 5. baseline: firebase-admin straight to the emulator, 8 threads
        sa = ephemeral_service_account(f"{emulator}/token", settings.fcm_project_id, "bench@x.y")
        sender = FcmSender(FcmTarget(sa, emulator, ephemeral=True), timeout=10)
        msgs = [
            build_message(e, "ok-direct-" + secrets.token_hex(6), ttl_seconds=60) for e in burst
        ]
        sender.send(msgs[0])
        t0 = time.time()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(sender.send, msgs))
        dt = time.time() - t0
        ok = sum(1 for r in results if r.message_id)
        print(
            f"direct     {ok / dt:7.1f} pushes/s (firebase-admin -> emulator, 8 threads, baseline)"
        )
        watcher.stop()
        publisher.stop()
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
        engine_for.cache_clear()
        drop_database(db_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
