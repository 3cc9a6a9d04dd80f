"""``plantnotify up``: port choice, and the whole stack started, used and stopped for real."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from devtools.localstack import Console, Part, StackError, Supervisor, choose_ports, tcp_ready
from devtools.world import Subscriber, leaf_png, settings_env, with_overrides
from plantnotify.contracts.events import EventType
from plantnotify.settings import Settings, load_settings
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_a_taken_default_port_is_replaced_but_a_taken_explicit_one_is_an_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = load_settings(api_port=taken)
        ports, notes = choose_ports(settings, {})
        assert ports["API_PORT"] != taken
        assert notes == [f"API_PORT {taken} is taken by another program; using {ports['API_PORT']}"]
        assert len(set(ports.values())) == len(ports)
        with pytest.raises(StackError, match=f"API_PORT={taken} .* already in use"):
            choose_ports(settings, {"API_PORT": str(taken)})


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_up_starts_everything_delivers_an_analysis_and_ctrl_c_leaves_nothing(
    worker_settings: Settings, tmp_path: Path
) -> None:
    ports = {
        "api_port": free_port(),
        "mqtt_port": free_port(),
        "mqtt_ws_port": free_port(),
        "standin_port": free_port(),
        "metrics_port_worker": free_port(),
        "metrics_port_bridge": free_port(),
        "fcm_emulator_port": free_port(),
    }
    settings = with_overrides(
        worker_settings,
        n8n_webhook_url=None,
        standin_delay_seconds=0.2,
        mqtt_data_dir=tmp_path / "mosquitto",
        **ports,
    )
    env = settings_env(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "plantnotify.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        text=True,
    )
    lines: list[str] = []
    pump = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    pump.start()
    try:
        deadline = time.monotonic() + 120
        while not any("plantnotify is up" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines[-50:])
            time.sleep(0.2)
        time.sleep(0.5)  # the banner is printed line by line
        out = "".join(lines)
        api = f"http://127.0.0.1:{ports['api_port']}"
        assert f"web app          {api}/" in out
        assert f"mqtt://127.0.0.1:{ports['mqtt_port']}" in out
        assert "FCM emulator" in out
        user_id = re.search(r"\(user id ([A-Za-z0-9_-]+)\)", out).group(1)  # type: ignore[union-attr]
        access = re.search(r"Authorization: Bearer ([^']+)'", out).group(1)  # type: ignore[union-attr]
        assert re.search(rf"mosquitto_sub -h 127.0.0.1 -p {ports['mqtt_port']} -u {user_id} ", out)

        with Subscriber(settings, user_id) as device:
            r = httpx.post(
                f"{api}/api/v1/plantanalyses/async",
                headers={"Authorization": f"Bearer {access}"},
                files={"image": ("leaf.png", leaf_png(), "image/png")},
                timeout=10,
            )
            assert r.status_code == 202, r.text
            completed = device.wait_event(r.json()["analysisId"], EventType.COMPLETED, timeout=30)
            assert 0 <= completed["overallHealthScore"] <= 100  # the stand-in really scored it

        family = _descendants(proc.pid)
        assert len(family) >= 7  # six parts, and mosquitto under `plantnotify broker`
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        pump.join(5)
    assert code == 0, "".join(lines[-40:])
    assert "stopped." in "".join(lines)
    left = [pid for pid in family if _alive(pid)]
    assert left == [], f"processes left behind: {left}"


def test_stop_is_tiered_so_the_worker_can_still_use_the_broker_while_it_stops(
    tmp_path: Path,
) -> None:
    """Why ``plantnotify up`` keeps its own supervisor instead of honcho: on Ctrl-C the API,
    worker and bridge stop first, while the broker and stand-ins (tier 0) still run, so a
    stopping worker finishes its analyses and publishes them. honcho SIGTERMs every process at
    once (``Manager._killall``) and SIGKILLs after a fixed 5 s (``KILL_WAIT``)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    broker = (
        "import socket, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        f"s = socket.create_server(('127.0.0.1', {port}))\n"
        "while True:\n"
        "    c, _ = s.accept(); c.sendall(b'ok'); c.close()\n"
    )
    worker = (
        "import socket, signal, sys, time\n"
        "def stop(*a):\n"
        "    time.sleep(0.5)  # finishing its jobs\n"
        f"    with socket.create_connection(('127.0.0.1', {port}), timeout=2) as c:\n"
        "        print('published while stopping:', c.recv(2).decode(), flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('worker ready', flush=True)\n"
        "while True: time.sleep(0.1)\n"
    )
    out = io.StringIO()
    parts = [
        Part("broker", [broker], tcp_ready(port), tier=0),
        Part("worker", [worker], lambda: "worker ready" in out.getvalue()),
    ]
    supervisor = Supervisor(parts, dict(os.environ), Console(out))  # type: ignore[arg-type]
    supervisor.start([sys.executable, "-c"])
    try:
        assert supervisor.wait_ready(20) == [], out.getvalue()
    finally:
        supervisor.stop()
    assert "published while stopping: ok" in out.getvalue(), out.getvalue()
    assert [p.process.returncode for p in parts if p.process] == [0, 0]
