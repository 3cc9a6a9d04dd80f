"""Broker authentication cost, measured side by side in one run.

1. Connect+auth throughput: clients in several processes do CONNECT -> CONNACK -> DISCONNECT
   as fast as they can against (a) our plugin with HS256, (b) our plugin with RS256 and
   (c) Mosquitto's own password_file, each broker rendered from the same configuration
   template (only the authentication lines differ). Rounds alternate to spread noise.
2. Memory per idle authenticated connection: broker RSS before and after N idle clients
   (spread over processes; each also holds one subscription), for the plugin and the
   password file.

    .venv/bin/python bench/broker_auth.py [--connects 3000] [--idle 3000] [--procs 4]

Not part of the test suite: numbers, not assertions.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from plantnotify.broker.config import PLUGIN_BUILD_PATH, BrokerLayout, render_config  # noqa: E402
from plantnotify.broker.process import BrokerProcess, free_port  # noqa: E402
from plantnotify.contracts.claims import mint_mqtt_token  # noqa: E402
from plantnotify.settings import Settings  # noqa: E402
from tests.support.mqtt import RawClient, connect_packet, subscribe_packet  # noqa: E402

PASSWORD = "bench-password-" + secrets.token_hex(8)


def start_password_broker(settings: Settings, data_dir: Path, users: list[str]) -> BrokerProcess:
    data_dir.mkdir(parents=True)
    pw = data_dir / "passwd"
    pw.write_text("".join(f"{u}:{PASSWORD}\n" for u in users))
    subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True)
    layout = BrokerLayout(free_port(), free_port(), data_dir, PLUGIN_BUILD_PATH)
    broker = BrokerProcess(settings, layout, log_path=data_dir / "mosquitto.log")
    # Render ours, then swap the plugin for the password file.
    text = render_config(settings, layout)
    conf = data_dir / "passwd.conf"
    conf.write_text(text[: text.index("# --- the plantnotify plugin")] + f"password_file {pw}\n")
    log = (data_dir / "mosquitto.log").open("ab")
    broker.proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 15
    while " running" not in (data_dir / "mosquitto.log").read_text():
        if time.monotonic() > deadline or broker.proc.poll() is not None:
            raise SystemExit(
                "password_file broker did not start:\n" + (data_dir / "mosquitto.log").read_text()
            )
        time.sleep(0.05)
    return broker


def start_plugin_broker(settings: Settings, data_dir: Path) -> BrokerProcess:
    layout = BrokerLayout(free_port(), free_port(), data_dir, PLUGIN_BUILD_PATH)
    data_dir.mkdir(parents=True)
    broker = BrokerProcess(settings, layout, log_path=data_dir / "mosquitto.log")
    broker.start()
    return broker


# ----------------------------------------------------------------------------- workers


def _connect_loop(
    port: int, creds: list[tuple[str, str]], count: int, worker: int, out: mp.Queue
) -> None:  # type: ignore[type-arg]
    done = refused = 0
    start = time.perf_counter()
    for i in range(count):
        user, password = creds[i % len(creds)]
        raw = RawClient(port)
        raw.send(connect_packet(f"{user}-w{worker}", user, password, keepalive=60))
        try:
            code = raw.connack()
        except ConnectionError:
            code = -1
        raw.send(b"\xe0\x00")  # DISCONNECT
        raw.close()
        if code == 0:
            done += 1
        else:
            refused += 1
    out.put((done, refused, time.perf_counter() - start))


def connect_rate(
    port: int, creds_per_worker: list[list[tuple[str, str]]], connects: int
) -> tuple[float, int]:
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    per = connects // len(creds_per_worker)
    procs = [
        mp.Process(target=_connect_loop, args=(port, creds, per, w, out))
        for w, creds in enumerate(creds_per_worker)
    ]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    ok = sum(r[0] for r in results)
    refused = sum(r[1] for r in results)
    return ok / elapsed, refused


def _hold_idle(
    port: int, conns: list[tuple[str, str, str]], ready: mp.Queue, stop: mp.Event
) -> None:  # type: ignore[type-arg]
    held = []
    failed = 0
    for user, client_id, password in conns:
        raw = RawClient(port, timeout=30)
        raw.send(connect_packet(client_id, user, password, keepalive=0))
        try:
            if raw.connack() != 0:
                failed += 1
                raw.close()
                continue
            raw.send(subscribe_packet(1, [f"users/{user}/#"]))
            raw.suback()
        except ConnectionError:
            failed += 1
            continue
        held.append(raw)
    ready.put(failed)
    stop.wait()
    for raw in held:
        raw.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def idle_memory(
    broker: BrokerProcess, conns: list[tuple[str, str, str]], procs: int
) -> tuple[int, int, int]:
    assert broker.pid is not None
    time.sleep(0.5)
    before = rss_kib(broker.pid)
    ready: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    stop = mp.Event()
    chunks = [conns[i::procs] for i in range(procs)]
    workers = [mp.Process(target=_hold_idle, args=(broker.port, c, ready, stop)) for c in chunks]
    for w in workers:
        w.start()
    failed = sum(ready.get(timeout=300) for _ in workers)
    time.sleep(1.5)  # a few TICKs: snapshots published, queues settled
    after = rss_kib(broker.pid)
    stop.set()
    for w in workers:
        w.join()
    return before, after, failed


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connects", type=int, default=3000, help="connects per round and broker")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=3000, help="idle connections for the RSS test")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    args = parser.parse_args()

    if not PLUGIN_BUILD_PATH.is_file():
        subprocess.run(["make", "-s", "-C", str(ROOT / "mosquitto" / "plugin")], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="plantnotify-bench-"))
    secret = secrets.token_hex(32)
    base = Settings(environment="test", jwt_secret=secret, mqtt_max_connections_per_user=5)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = tmp / "rs.key"
    pub = tmp / "rs.pub"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    rs = Settings(
        **{
            **base.model_dump(),
            "mqtt_jwt_algorithm": "RS256",
            "mqtt_jwt_private_key_file": priv,
            "mqtt_jwt_public_key_file": pub,
        }
    )

    idle_users = [f"idle{i}" for i in range((args.idle + 4) // 5)]
    bench_users = [f"bench{w}" for w in range(args.procs)]
    brokers: dict[str, BrokerProcess] = {}
    try:
        brokers["plugin HS256"] = start_plugin_broker(base, tmp / "hs")
        brokers["plugin RS256"] = start_plugin_broker(rs, tmp / "rs")
        brokers["password_file"] = start_password_broker(base, tmp / "pw", bench_users + idle_users)
        creds: dict[str, Callable[[str], str]] = {
            "plugin HS256": lambda u: mint_mqtt_token(base.mqtt_signer, u, 3600),
            "plugin RS256": lambda u: mint_mqtt_token(rs.mqtt_signer, u, 3600),
            "password_file": lambda u: PASSWORD,
        }

        print(
            f"\nconnect + auth + CONNACK + DISCONNECT, {args.procs} client processes, "
            f"{args.connects} connects per round, {args.rounds} rounds (2-core machine, clients share it)"
        )
        rates: dict[str, list[float]] = {name: [] for name in brokers}
        for _ in range(args.rounds):
            for name, broker in brokers.items():
                per_worker = [[(u, creds[name](u))] for u in bench_users]
                rate, refused = connect_rate(broker.port, per_worker, args.connects)
                if refused:
                    raise SystemExit(f"{name}: {refused} connects refused")
                rates[name].append(rate)
        base_rate = statistics.median(rates["password_file"])
        print(f"{'broker':<16}{'median conn/s':>15}{'min':>9}{'max':>9}{'vs password_file':>19}")
        for name, rs_ in rates.items():
            med = statistics.median(rs_)
            print(
                f"{name:<16}{med:>15,.0f}{min(rs_):>9,.0f}{max(rs_):>9,.0f}{med / base_rate:>18.2f}x"
            )

        print(
            f"\nidle authenticated connections (each with one subscription): {args.idle}, "
            f"{len(idle_users)} users, {args.procs} client processes"
        )
        print(f"{'broker':<16}{'RSS before':>12}{'RSS after':>12}{'bytes/conn':>12}{'failed':>8}")
        for name in ("plugin HS256", "password_file"):
            broker = brokers[name]
            conns = []
            for i in range(args.idle):
                u = idle_users[i // 5]
                conns.append((u, f"{u}-{i % 5}", creds[name](u)))
            before, after, failed = idle_memory(broker, conns, args.procs)
            per = (after - before) * 1024 / max(args.idle - failed, 1)
            print(f"{name:<16}{before:>9,} KiB{after:>9,} KiB{per:>12,.0f}{failed:>8}")
        return 0
    finally:
        for broker in brokers.values():
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
