"""The plugin's C code under tools: unit tests (ASan+UBSan), a bounded libFuzzer run, and the
live broker running the plugin built with AddressSanitizer and the release build under
valgrind, each driven through the same workload of good and hostile clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from plantnotify.contracts.topics import (
    ALL_SESSIONS_FILTER,
    BROKER_SESSIONS_TOPIC,
    BROKER_STATS_TOPIC,
    SESSIONS_REQUEST_TOPIC,
    analysis_topic,
    receipts_topic,
    user_filter,
)
from tests.mosquitto.test_auth import ATTACKS
from tests.support.broker import PLUGIN_DIR, BrokerFactory, BrokerHandle, build_plugin
from tests.support.mqtt import V5, V311, ConnectRefused, connect, connect_packet, raw_connect

FUZZ_SECONDS = 10


def _make(*targets: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(PLUGIN_DIR), *targets],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_c_unit_tests_pass() -> None:
    result = _make("test")
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"test_token: (\d+) checks, 0 failures", result.stdout)
    assert match and int(match.group(1)) > 1000, result.stdout
    match = re.search(r"test_revocations: (\d+) checks, 0 failures", result.stdout)
    assert match and int(match.group(1)) > 100, result.stdout


def test_token_parser_survives_a_short_fuzz_run(tmp_path: Path) -> None:
    result = _make(
        "fuzz",
        f"FUZZ_SECONDS={FUZZ_SECONDS}",
        f"FUZZ_CORPUS={tmp_path}",
        timeout=FUZZ_SECONDS + 180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    runs = re.search(r"Done (\d+) runs", output)
    assert runs and int(runs.group(1)) > 1000, output[-2000:]
    assert "ERROR: AddressSanitizer" not in output
    assert "runtime error" not in output  # UBSan


def exercise(b: BrokerHandle) -> None:
    """Good and hostile traffic through every plugin callback (auth, ACL, tick, disconnect)."""
    secret = b.settings.jwt_secret
    svc = connect(b.port, "svc-mem", b.token("svc-mem", service=True), "svc-mem")
    assert svc.subscribe(ALL_SESSIONS_FILTER) == [1]
    for attack in ATTACKS[::3]:
        for version in (4, 5):
            code, raw = raw_connect(
                b.port, attack.client_id, attack.username, attack.make(secret), version=version
            )
            raw.close()
            assert code != 0
    clients = []
    for i, protocol in enumerate((V311, V5, V5)):
        c = connect(b.port, "mem1", b.token("mem1"), f"mem1-{i}", protocol=protocol)
        assert c.subscribe(user_filter("mem1")) == [1]
        assert c.subscribe("#")[0] >= 0x80
        assert c.subscribe("$share/g/users/mem1/#")[0] >= 0x80
        c.publish(receipts_topic("mem1"), b'{"eventId":"e"}')
        c.publish(analysis_topic("mem2", "x"), b"{}", retain=True)
        clients.append(c)
    with pytest.raises(ConnectRefused):  # over the limit of 3 set below
        connect(b.port, "mem1", b.token("mem1"), "mem1-extra")
    clients.append(connect(b.port, "mem1", b.token("mem1"), "mem1-0"))  # take-over
    svc.publish(analysis_topic("mem1", "e1"), b'{"n":1}', retain=True)
    # The whole picture on request: twice (answered once each, or once for the newer when both
    # came in one TICK), a bad id, and from a user (refused).
    svc.publish(SESSIONS_REQUEST_TOPIC, b"mem-req-1")
    svc.publish(SESSIONS_REQUEST_TOPIC, b"mem-req-2")
    svc.publish(SESSIONS_REQUEST_TOPIC, b"not valid/" + b"x" * 100)
    assert clients[1].publish(SESSIONS_REQUEST_TOPIC, b"user-req") == 0x87  # not authorized
    parts = [m for m in svc.drain(0.5) if m.topic == BROKER_SESSIONS_TOPIC]
    ids = [json.loads(m.payload)["requestId"] for m in parts]
    assert ids in (["mem-req-2"], ["mem-req-1", "mem-req-2"]), ids
    assert b'"userId":"mem1"' in parts[-1].payload
    short = connect(b.port, "mem3", b.token("mem3", ttl=1), "mem3")  # kicked by TICK
    assert short.disconnected.wait(6)
    ws = connect(b.ws_port, "mem4", b.token("mem4"), "mem4", transport="websockets")
    assert ws.subscribe(user_filter("mem4")) == [1]
    ws.close()
    for c in clients:
        c.close()
    svc.drain(0.5)
    svc.close()


def _memory_broker(broker_factory: BrokerFactory, **kwargs: object) -> BrokerHandle:
    return broker_factory(
        mqtt_expiry_check_seconds=1,
        mqtt_leeway_seconds=0,
        mqtt_max_connections_per_user=3,
        **kwargs,
    )


def _asan_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment that loads the ASan runtime into Mosquitto, logging to tmp_path/asan.*."""
    runtime = subprocess.run(
        ["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(runtime).is_file(), (
        f"ASan runtime not found ({runtime}); install libclang-rt-14-dev"
    )
    asan_log = tmp_path / "asan"
    env = {
        **os.environ,
        "LD_PRELOAD": runtime,
        # Leaks are reported for the plugin only (Mosquitto itself is not built for LSan).
        "ASAN_OPTIONS": f"log_path={asan_log}:detect_leaks=1:halt_on_error=1",
        "LSAN_OPTIONS": "report_objects=0",
    }
    return env, asan_log


def _assert_no_plugin_errors(tmp_path: Path, asan_log: Path) -> None:
    reports = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob(f"{asan_log.name}.*"))
    assert "ERROR: AddressSanitizer" not in reports, reports[-6000:]
    plugin_leaks = [
        block
        for block in reports.split("\n\n")
        if "leak of" in block
        and re.search(
            r"(token|acl|sessions|plantnotify_plugin)\.c|plantnotify_auth_asan\.so", block
        )
    ]
    assert not plugin_leaks, "\n\n".join(plugin_leaks)[-6000:]


def test_live_broker_with_the_asan_plugin(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    build = _make("asan")
    assert build.returncode == 0, build.stdout + build.stderr
    env, asan_log = _asan_env(tmp_path)
    b = _memory_broker(broker_factory, plugin_path=PLUGIN_DIR / "plantnotify_auth_asan.so", env=env)
    maps = Path(f"/proc/{b.process.pid}/maps").read_text()
    assert "libclang_rt.asan" in maps and "plantnotify_auth_asan.so" in maps
    exercise(b)
    b.stop()
    assert "plantnotify: loaded" in b.log_text()
    _assert_no_plugin_errors(tmp_path, asan_log)


def test_live_broker_under_valgrind(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    plugin = build_plugin()
    vg_log = tmp_path / "valgrind.log"
    wrapper = [
        "valgrind",
        "--error-exitcode=99",
        "--leak-check=no",
        "--track-origins=no",
        f"--log-file={vg_log}",
    ]
    b = _memory_broker(broker_factory, plugin_path=plugin, wrapper=wrapper, start=False)
    b.process.start(timeout=60)
    started = time.monotonic()
    exercise(b)
    rc = b.process.stop(timeout=30)
    report = vg_log.read_text(errors="replace")
    errors = re.search(r"ERROR SUMMARY: (\d+) errors", report)
    assert errors, report[-3000:]
    assert errors.group(1) == "0", report[-6000:]
    assert rc == 0, f"mosquitto under valgrind exited {rc} after {time.monotonic() - started:.0f}s"


# Connections in the churn run: a short run here; `make test-plugin-churn` runs 50,000.
CHURN = int(os.environ.get("PLANTNOTIFY_PLUGIN_CHURN", "3000"))


async def _churn(
    port: int, creds: list[tuple[str, str, str, str]], concurrency: int = 32
) -> Counter[str]:
    """CONNECT, read CONNACK, then leave: DISCONNECT, a reset, or the server refusing."""
    outcomes: Counter[str] = Counter()
    sem = asyncio.Semaphore(concurrency)

    async def one(client_id: str, user: str, token: str, leave: str) -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(connect_packet(client_id, user, token, version=4))
                connack = await asyncio.wait_for(reader.readexactly(4), 10)
                outcomes["accepted" if connack[3] == 0 else "refused"] += 1
                if leave == "disconnect" and connack[3] == 0:
                    writer.write(b"\xe0\x00")
                    await writer.drain()
                elif leave == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                outcomes["dropped"] += 1
            finally:
                writer.close()

    await asyncio.gather(*(one(*c) for c in creds))
    return outcomes


def test_no_plugin_leak_over_a_connect_disconnect_churn(
    broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    """CHURN connects through the ASan plugin: accepted and refused, taken over, reset, left
    with DISCONNECT. Afterwards nothing is live, no retained snapshot of a churned user is
    left in the broker, and LeakSanitizer finds nothing of the plugin's at shutdown."""
    build = _make("asan")
    assert build.returncode == 0, build.stdout + build.stderr
    env, asan_log = _asan_env(tmp_path)
    b = _memory_broker(
        broker_factory,
        plugin_path=PLUGIN_DIR / "plantnotify_auth_asan.so",
        env=env,
        plugin_options={"stats_interval": "1"},
    )
    users = max(1, CHURN // 5)
    tokens = {f"churn{u}": b.token(f"churn{u}") for u in range(users)}
    creds = []
    for i in range(CHURN):
        user = f"churn{i % users}"
        # Same client id per (user, i % 3): later rounds take over sessions still closing.
        client_id = f"{user}-{(i // users) % 3}"
        token = tokens[user] if i % 10 else tokens[user][:-4] + "AAAA"  # every 10th: bad signature
        leave = ("disconnect", "reset", "close")[i % 3]
        creds.append((client_id, user, token, leave))
    started = time.monotonic()
    outcomes = asyncio.run(_churn(b.port, creds))
    assert outcomes["accepted"] >= CHURN * 0.85, outcomes
    assert outcomes["refused"] >= CHURN // 10 - 1, outcomes
    watcher = connect(b.port, "svc-churn", b.token("svc-churn", service=True), "svc-churn")
    try:
        assert watcher.subscribe(BROKER_STATS_TOPIC) == [1]
        deadline = time.monotonic() + 30
        live = None
        while time.monotonic() < deadline and live != 1:  # 1: the watcher itself
            stats = [m for m in watcher.drain(0.5) if m.topic == BROKER_STATS_TOPIC]
            if stats:
                live = json.loads(stats[-1].payload)["live"]
        assert live == 1, f"live connections after the churn: {live}"
        time.sleep(1.5)  # the last snapshots (at most snapshots_per_second) are out
        assert watcher.subscribe(ALL_SESSIONS_FILTER) == [1]
        left = [
            m.topic
            for m in watcher.drain(1.5)
            if m.retain and m.topic.startswith("plantnotify/sessions/")
        ]
        assert not left, f"retained snapshots left for users with no connection: {left[:5]}"
        watcher.publish(SESSIONS_REQUEST_TOPIC, b"after-churn")
        parts = [m for m in watcher.drain(1.0) if m.topic == BROKER_SESSIONS_TOPIC]
        assert len(parts) == 1 and b'"sessions":[]' in parts[0].payload, parts
    finally:
        watcher.close()
    b.stop()
    _assert_no_plugin_errors(tmp_path, asan_log)
    elapsed = time.monotonic() - started
    print(f"churn of {CHURN} connections: {dict(outcomes)} in {elapsed:.1f} s")
