"""The worker's CPU per analysis, and its profile (not part of the test suite; prints numbers).

    .venv/bin/python -m bench.scripts.workercpu [--analyses 3000] [--rate 0] [--profile out]

A ``plantnotify worker`` process (the production code, default concurrency) takes jobs straight
from RabbitMQ (queued as the API queues them: a row with its image, then a persistent job with
a ``traceparent``), calls a fake N8N that answers at once, commits each result with its outbox
row and publishes it to our Mosquitto. Measured: the worker's CPU seconds (``/proc/<pid>/stat``
utime + stime) from the first job queued until every event is published, divided by the
analyses; that figure is robust to other load on the machine. ``--rate 0`` queues everything
at once (throughput: the worker runs flat out); a rate paces the jobs. ``--profile FILE``
samples the worker with py-spy meanwhile (``FILE.svg`` flame graph, ``FILE.txt`` top functions
by own time) when py-spy is installed.

Uses its own PostgreSQL database, RabbitMQ vhost and Mosquitto (bench.scripts.outbox's).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from bench.scripts.outbox import Environment
from devtools.fake_n8n import FakeN8n
from devtools.world import leaf_png, sessions_for, settings_env, with_overrides
from plantnotify.amqp.publisher import JobPublisher
from plantnotify.contracts.events import AnalysisStatus
from plantnotify.contracts.queues import AnalysisJob
from plantnotify.db.models import Analysis, AnalysisImage
from plantnotify.net import free_port
from plantnotify.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def make_rows(settings: Settings, count: int, users: int) -> list[tuple[str, str]]:
    image = leaf_png()
    jobs = [(str(uuid.uuid4()), f"u-cpu-{i % users}") for i in range(count)]
    with sessions_for(settings).begin() as s:
        s.add_all(
            Analysis(
                id=aid,
                user_id=uid,
                status=AnalysisStatus.PROCESSING,
                crop_type="tomato",
                mime_type="image/png",
                image_size=len(image),
            )
            for aid, uid in jobs
        )
        s.flush()
        s.add_all(AnalysisImage(analysis_id=aid, data=image) for aid, _ in jobs)
    return jobs


def left(settings: Settings) -> int:
    """Analyses not finished, plus events not yet published."""
    with sessions_for(settings)() as s:
        return int(
            s.execute(
                text(
                    "SELECT (SELECT count(*) FROM analyses WHERE status = 'Processing')"
                    " + (SELECT count(*) FROM events WHERE published_at IS NULL)"
                )
            ).scalar_one()
        )


def run(settings: Settings, count: int, rate: float, profile: str | None) -> None:
    fake = FakeN8n().start()
    worker_settings = with_overrides(
        settings, n8n_webhook_url=fake.url, n8n_timeout_seconds=10, metrics_port_worker=free_port()
    )
    log_path = Path(tempfile.mkstemp(prefix="plantnotify-workercpu-", suffix=".log")[1])
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "plantnotify.cli", "worker"],
            env=settings_env(worker_settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 60
    while "worker ready" not in log_path.read_text():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    publisher = JobPublisher(settings.rabbitmq_url, app_id="bench")
    # warm-up: connections, caches, first compilations
    for aid, uid in make_rows(settings, 50, 10):
        publisher.publish(AnalysisJob(analysis_id=aid, user_id=uid, traceparent=_traceparent()))
    while left(settings):
        time.sleep(0.05)
    jobs = make_rows(settings, count, 50)
    messages = [
        AnalysisJob(analysis_id=aid, user_id=uid, traceparent=_traceparent()) for aid, uid in jobs
    ]
    spy = None
    spy_path = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if profile and spy_path:
        spy = subprocess.Popen(
            [
                spy_path,
                "record",
                "--pid",
                str(worker.pid),
                "--rate",
                "200",
                "--nonblocking",
                "--gil",
                "--format",
                "raw",
                "-o",
                profile + ".raw",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
    (user0, sys0), started = cpu_times(worker.pid), time.monotonic()
    for i, job in enumerate(messages):
        if rate:
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
        publisher.publish(job)
    queued = time.monotonic() - started
    deadline = time.monotonic() + 600
    while left(settings) and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    user1, sys1 = cpu_times(worker.pid)
    user, system = user1 - user0, sys1 - sys0
    cpu = user + system
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
    publisher.close()
    worker.terminate()
    worker.wait(30)
    fake.stop()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"{count} analyses, {'all at once' if not rate else f'{rate:g}/s'} "
        f"(queued in {queued:.1f} s): done in {elapsed:.1f} s = {count / elapsed:.0f} analyses/s"
    )
    print(
        f"worker CPU {cpu:.2f} s = {cpu / count * 1000:.2f} ms per analysis "
        f"(user {user / count * 1000:.2f} + system {system / count * 1000:.2f}; "
        f"load average {' '.join(load)})"
    )
    log_text = log_path.read_text()
    errors = [line for line in log_text.splitlines() if "ERROR" in line or "Traceback" in line]
    if errors:
        print(f"worker log has {len(errors)} error lines, e.g. {errors[0][:300]}")


def _traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--analyses", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=0.0, help="jobs per second; 0: all at once")
    parser.add_argument("--profile", help="py-spy output prefix")
    args = parser.parse_args()
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    with Environment() as settings:
        run(settings, args.analyses, args.rate, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
