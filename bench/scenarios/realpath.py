"""The real path, stage by stage: upload → API → RabbitMQ → worker → outbox → broker → device.

Everything is the production code: farmers upload photos through ``plantnotify api`` (uploader
agent, fixed rate), the API queues the job on RabbitMQ, ``plantnotify worker`` claims it, calls
the N8N stand-in (0 s delay; it really decodes the image), commits the result with its outbox
row, and the outbox publisher sends it retained QoS 1 to our Mosquitto; each user has one
device on MQTT/TCP and one on MQTT over WebSocket.

Per event the worker records (``worker/stages.py``, CLOCK_MONOTONIC) when ``completedAt`` was
taken, when the result's COMMIT returned, when the outbox read the row, when the PUBLISH was
written and when its PUBACK was read; the devices record the arrival. Latency = device arrival
- ``completedAt`` (the contract's definition), and each stage is the difference of two of
these. Results per rate: every stage's p50/p99/max, the 202 → completedAt time (RabbitMQ,
claim, N8N; negative when the worker finished before the API's answer reached the uploader),
the achieved upload rate, and a stacked plot of where the time goes.
"""

from __future__ import annotations

import base64
import io
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from bench.context import BenchContext
from bench.plots import figure, save
from bench.procs import cpu_seconds
from bench.results import ScenarioResult
from bench.stack import device_agent, our_stack, start_service
from bench.stats import summarize

NAME = "realpath"
REQUIRES = ("api.main", "worker.outbox")
NEEDS_SERVICES = True
TITLE = "Upload → device through API, RabbitMQ, worker, outbox and broker (stage by stage)"
FULL_RATES = (50, 500, 2000)
QUICK_RATES = (50,)
USERS_N = 20
TRANSPORTS = ("tcp", "ws")
# (name, from, to): the stages of completedAt → device, in order (they add up).
STAGES = (
    ("commit", "completed", "committed"),
    ("outbox wake + read", "committed", "read"),
    ("publish written", "read", "written"),
)


def steps(quick: bool) -> int:
    return 4 + len(QUICK_RATES if quick else FULL_RATES)


def leaf_image() -> bytes:
    """A small leaf-like JPEG (green blade, brown spots): what the stand-in analyses."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (96, 96), (226, 236, 220))
    draw = ImageDraw.Draw(img)
    draw.ellipse((12, 24, 84, 72), fill=(58, 140, 62))
    for x, y in ((30, 40), (52, 50), (60, 34)):
        draw.ellipse((x, y, x + 6, y + 6), fill=(122, 84, 40))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def read_stages(path: Path) -> dict[str, dict[str, int]]:
    """The worker's stage file: analysis id -> stage -> CLOCK_MONOTONIC ns (first seen)."""
    out: dict[str, dict[str, int]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        out.setdefault(parts[0], {}).setdefault(parts[1], int(parts[2]))
    return out


def stage_table(
    accepted: dict[str, int],
    stages: dict[str, dict[str, int]],
    devices: dict[str, dict[str, int]],
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Per stage and per transport: summaries (ms) and the raw samples."""
    samples: dict[str, list[float]] = {}

    def add(name: str, a: int | None, b: int | None) -> None:
        if a is not None and b is not None:
            samples.setdefault(name, []).append((b - a) / 1e6)

    for analysis_id, uploaded in accepted.items():
        st = stages.get(analysis_id, {})
        add("202 → completedAt", uploaded, st.get("completed"))
        for name, a, b in STAGES:
            add(name, st.get(a), st.get(b))
        add("PUBACK after write", st.get("written"), st.get("puback"))
        for transport, got in devices.items():
            add(f"broker → device {transport}", st.get("written"), got.get(analysis_id))
            add(f"completedAt → device {transport}", st.get("completed"), got.get(analysis_id))
    return {k: summarize(v) for k, v in samples.items()}, samples


def _register(base: str, run_id: str, count: int) -> list[tuple[str, str]]:
    users: list[tuple[str, str]] = []
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(count):
            username, password = f"real{i}_{run_id}", secrets.token_urlsafe(12)
            http.post(
                "/auth/register", json={"username": username, "password": password}
            ).raise_for_status()
            r = http.post("/auth/login", json={"username": username, "password": password})
            r.raise_for_status()
            users.append((r.json()["userId"], r.json()["accessToken"]))
    return users


def run(ctx: BenchContext, result: ScenarioResult) -> None:
    seconds = ctx.pick(1.5, 10.0)
    rates = QUICK_RATES if ctx.quick else FULL_RATES
    ctx.step("database, vhost, broker, worker")
    stack = our_stack(ctx)
    settings = stack.settings
    ctx.step("starting plantnotify api and the N8N stand-in (0 s)")
    services = [
        start_service(
            ctx, "realpath-api", ["api"], settings, ready_port=settings.api_port, wait=False
        ),
        start_service(
            ctx,
            "realpath-n8n-standin",
            ["n8n-standin", "--port", str(settings.standin_port), "--delay", "0"],
            settings,
            ready_port=settings.standin_port,
            wait=False,
        ),
    ]
    uploader = ctx.agent("uploader", "realpath-uploader")
    for service in [*services, stack.worker]:
        service.wait_ready()
    api = services[0]
    base = f"http://127.0.0.1:{settings.api_port}/api/v1"
    users = _register(base, ctx.run_id, ctx.pick(4, USERS_N))
    user_ids = [u for u, _ in users]
    ctx.step("connecting devices")
    broker = stack.broker
    assert broker.ws_port is not None
    ports = {"tcp": broker.port, "ws": broker.ws_port}
    devices = {
        t: device_agent(
            ctx, f"realpath-devices-{t}", ports[t], user_ids, transport=t, match="AnalysisCompleted"
        )
        for t in TRANSPORTS
    }
    image = base64.b64encode(leaf_image()).decode()
    tokens = [token for _, token in users]

    def step(rate: float, count: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
        pids = {
            "api": api.pid,
            "worker": stack.worker.pid,
            "n8n-standin": services[1].pid,
            "broker": broker.pid,
        }
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        answer = uploader.call(
            "run",
            timeout=count / rate * 20 + 120,
            base_url=base,
            tokens=tokens,
            image_b64=image,
            rate=rate,
            count=count,
            max_seconds=seconds * 1.5 + 2,
            threads=max(4, min(64, int(rate / 10))),
        )
        accepted: dict[str, int] = answer["accepted"]
        got = {
            t: agent.call("collect", timeout=120, expect=len(accepted), wait=60)["received"]
            for t, agent in devices.items()
        }
        time.sleep(1.2)  # the worker flushes its stage file every 0.5 s
        table, samples = stage_table(accepted, read_stages(ctx.log_dir / "worker-stages.txt"), got)
        out: dict[str, Any] = {
            "offered_rate": rate,
            "uploads": count,
            "accepted": len(accepted),
            "upload_errors": answer["errors"],
            "not_sent_in_time": answer["not_sent"],
            "achieved_upload_rate": round(answer["achieved_rate"] or 0, 1),
            "delivered": {t: sum(1 for a in accepted if a in got[t]) for t in got},
            "stages_ms": table,
            "cpu_seconds_per_1000": {
                k: round((cpu_seconds(p) - cpu0[k]) / max(1, len(accepted)) * 1000, 3)
                for k, p in pids.items()
            },
        }
        return out, samples

    step(20, ctx.pick(10, 40))  # warm-up (connections, caches), not recorded
    table: list[dict[str, Any]] = []
    for rate in rates:
        ctx.step(f"{rate} uploads/s for {seconds:.0f} s")
        row, samples = step(rate, max(10, int(rate * seconds)))
        table.append(row)
        for transport in TRANSPORTS:
            s = row["stages_ms"].get(f"completedAt → device {transport}", {})
            result.metrics[f"{transport}_p50_ms_at_{rate}"] = s.get("p50")
            result.metrics[f"{transport}_p99_ms_at_{rate}"] = s.get("p99")
            result.series[f"samples_{transport}_{rate}"] = [
                round(x, 3) for x in samples.get(f"completedAt → device {transport}", [])
            ]
        result.metrics[f"achieved_upload_rate_at_{rate}"] = row["achieved_upload_rate"]
    result.series["steps"] = table
    result.notes.append(
        f"{len(users)} users registered through the API, each with one MQTT/TCP and one WebSocket "
        f"device; {seconds:.0f} s per rate; one API process, one worker process "
        f"(WORKER_CONCURRENCY {settings.worker_concurrency}), N8N stand-in at 0 s delay, one "
        "broker. Stages from the worker's own CLOCK_MONOTONIC records (worker/stages.py)."
    )


def plot(result: ScenarioResult, out_dir: Path) -> list[Path]:
    steps_ = result.series["steps"]
    fig, axes = figure("completedAt → device, stage by stage", ncols=2, width=10.0)
    colours = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
    for ax, q in zip(axes, ("p50", "p99"), strict=True):
        labels: list[str] = []
        bottoms: list[float] = []
        xs = range(len(steps_) * len(TRANSPORTS))
        for s in steps_:
            for t in TRANSPORTS:
                labels.append(f"{s['offered_rate']}/s {t}")
                bottoms.append(0.0)
        names = [n for n, _, _ in STAGES] + ["broker → device"]
        for colour, name in zip(colours, names, strict=True):
            heights = []
            for s in steps_:
                for t in TRANSPORTS:
                    key = f"{name} {t}" if name == "broker → device" else name
                    heights.append(float(s["stages_ms"].get(key, {}).get(q) or 0.0))
            ax.bar(xs, heights, bottom=bottoms, color=colour, label=name)
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        totals = []
        for s in steps_:
            for t in TRANSPORTS:
                totals.append(s["stages_ms"].get(f"completedAt → device {t}", {}).get(q) or 0.0)
        ax.plot(list(xs), totals, "k_", markersize=14, label=f"end to end {q}")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=30, fontsize=7)
        ax.set_ylabel(f"ms ({q} of each stage)")
        ax.legend(fontsize=7)
    return [save(fig, out_dir / f"{NAME}.png")]
