"""The whole system running for client tests (browser, ``plantnotify watch``).

``live_stack`` (session-scoped) is the real API (uvicorn on a free port, serving ``web/dist``),
a real in-process worker, our Mosquitto with the plugin on free ports, a PostgreSQL database and
a RabbitMQ vhost of its own and the fake N8N (the only fake). Its own database matters: its
worker's outbox publisher runs for the whole session and would otherwise publish (and mark
published) the events of every other test. The broker is this
stack's own, so its tests may stop and restart it (they must leave it running).

Helpers: ``ServiceSubscriber`` watches a user's topics with a service token and timestamps
every event on arrival (the browser tests measure broker → toast latency against it), and
``publish_as_service`` re-publishes a payload (QoS-1 duplicate / retained replay tests).
"""

from __future__ import annotations

import io
import json
import random
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from PIL import Image, ImageDraw, ImageFilter

from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.ids import new_client_id
from plantnotify.contracts.topics import analyses_filter, analysis_topic
from plantnotify.db.session import drop_database, migrate
from plantnotify.mqtt import ConnectOptions, Credentials, Message, MqttClient
from plantnotify.settings import Settings
from tests.support.broker import BrokerHandle, make_broker, settings_with
from tests.support.fake_n8n import FakeN8n
from tests.support.net import free_port, wait_for
from tests.support.services import RUN_ID

ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "web"

# Short realtime tokens: every client test also exercises renewal before expiry.
REALTIME_TOKEN_TTL = 10
# Clients re-read /config (the rollout switch) and poll this often: tests see a flip in ~1 s.
ROLLOUT_CHECK_SECONDS = 1.0
POLL_SECONDS = 1.0
N8N_DELAY = "slow:0.8"  # time-scaled "2-5 minutes": long enough to see "Analysing"


def build_web() -> None:
    """``make -C web``: npm ci when needed, then the build (skipped when up to date)."""
    proc = subprocess.run(
        ["make", "-s", "-C", str(WEB_DIR)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not (WEB_DIR / "dist" / "index.html").is_file():
        pytest.fail(
            f"could not build the web app (make -C web):\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )


def leaf_jpeg(seed: int = 1, size: int = 480) -> bytes:
    """A leaf-like photo (green blade, brown lesions), different per seed."""
    rnd = random.Random(seed)
    img = Image.new("RGB", (size, size), (226, 236, 220))
    draw = ImageDraw.Draw(img)
    s = size / 480
    draw.ellipse((70 * s, 120 * s, 410 * s, 360 * s), fill=(58, 140, 62))
    draw.line((80 * s, 240 * s, 420 * s, 240 * s), fill=(120, 176, 96), width=max(1, int(5 * s)))
    for _ in range(14):
        x, y, r = rnd.randint(130, 360) * s, rnd.randint(150, 330) * s, rnd.randint(8, 22) * s
        draw.ellipse((x, y, x + r, y + r), fill=(122, 84, 40))
    out = io.BytesIO()
    img.filter(ImageFilter.SMOOTH).save(out, "JPEG", quality=88)
    return out.getvalue()


class ApiServer:
    """The real FastAPI app under uvicorn, in a thread, on a free port."""

    def __init__(self, settings: Settings) -> None:
        from api.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api-server", daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=20, what="the API to start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class LiveStack:
    settings: Settings
    broker: BrokerHandle
    api: ApiServer
    n8n: FakeN8n
    worker: Any

    @property
    def api_url(self) -> str:
        return self.api.url

    def register(self) -> tuple[str, str, str]:
        """A new account through the API: (username, password, user id)."""
        username = "grower-" + secrets.token_hex(4)
        password = "leaf-" + secrets.token_urlsafe(12)
        r = httpx.post(
            f"{self.api_url}/api/v1/auth/register",
            json={"username": username, "password": password},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        return username, password, r.json()["userId"]

    def login(self, username: str, password: str) -> str:
        r = httpx.post(
            f"{self.api_url}/api/v1/auth/login",
            json={"username": username, "password": password},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return str(r.json()["accessToken"])

    def upload(self, access_token: str, image: bytes, crop: str | None = None) -> str:
        data = {"cropType": crop} if crop else None
        r = httpx.post(
            f"{self.api_url}/api/v1/plantanalyses/async",
            headers={"Authorization": f"Bearer {access_token}"},
            files={"image": ("leaf.jpg", image, "image/jpeg")},
            data=data,
            timeout=10,
        )
        assert r.status_code == 202, r.text
        return str(r.json()["analysisId"])

    def service_token(self, ttl: int = 600) -> str:
        return mint_mqtt_token(self.settings.mqtt_signer, "ops", ttl, service=True)


@dataclass
class Arrival:
    at: float  # time.time() when the subscriber got it
    retained: bool
    payload: dict[str, Any]


@dataclass
class ServiceSubscriber:
    """Sees what the broker delivers on one user's analysis topics (service role)."""

    stack: LiveStack
    user_id: str
    topic_filter: str | None = None  # default: the user's analysis events
    arrivals: list[Arrival] = field(default_factory=list)

    def __post_init__(self) -> None:
        stack = self.stack
        topic_filter = self.topic_filter or analyses_filter(self.user_id)
        self._lock = threading.Lock()
        self.client = MqttClient(
            ConnectOptions(
                host="127.0.0.1",
                port=stack.broker.port,
                client_id=new_client_id("ops", secrets.token_hex(4)),
                credentials=lambda: Credentials("ops", stack.service_token()),
                subscriptions=[(topic_filter, 1)],
                reconnect_max_delay=0.5,
            ),
            on_message=self._on_message,
        )

    def _on_message(self, message: Message) -> None:
        if not message.payload:
            return
        with self._lock:
            self.arrivals.append(Arrival(time.time(), message.retain, json.loads(message.payload)))

    def __enter__(self) -> ServiceSubscriber:
        self.client.start()
        self.client.wait_connected(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()

    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a.payload for a in self.arrivals]

    def first(self, analysis_id: str, event: str, timeout: float = 20.0) -> Arrival:
        def find() -> Arrival | None:
            with self._lock:
                for a in self.arrivals:
                    p = a.payload
                    if p.get("analysisId") == analysis_id and p.get("event") == event:
                        return a
            return None

        return wait_for(find, timeout=timeout, what=f"{event} of {analysis_id} on the broker")


class BrokerClock:
    """``mosquitto_sub`` in its own process, stamping every message with the time it arrived.

    mosquitto_sub line-buffered (stdbuf), in a separate process, so the test's own threads (Playwright, paho) cannot delay the stamp:
    this is "the moment the event was on the broker" for latency measurements.
    """

    def __init__(self, stack: LiveStack, topic_filter: str) -> None:
        self.stack = stack
        self.topic_filter = topic_filter
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> BrokerClock:
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.stack.broker.port),
             "-u", "ops", "-P", self.stack.service_token(),
             "-i", new_client_id("ops", "clock-" + secrets.token_hex(3)),
             "-t", self.topic_filter, "-q", "1", "-V", "mqttv5", "-d", "-F", "MSG %U %r %p"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        if not self._subscribed.wait(10):
            raise AssertionError("mosquitto_sub did not subscribe within 10 s")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("MSG "):  # ("@" would start a strftime code in -F)
                stamp, retain, payload = line[4:].rstrip("\n").split(" ", 2)
                with self._lock:
                    self.arrivals.append(Arrival(float(stamp), retain == "1", json.loads(payload)))
            elif "received SUBACK" in line:
                self._subscribed.set()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)

    def first(self, analysis_id: str, event: str, timeout: float = 20.0) -> Arrival:
        def find() -> Arrival | None:
            with self._lock:
                for a in self.arrivals:
                    p = a.payload
                    if p.get("analysisId") == analysis_id and p.get("event") == event:
                        return a
            return None

        return wait_for(find, timeout=timeout, what=f"{event} of {analysis_id} at mosquitto_sub")


def publish_as_service(
    stack: LiveStack, payload: dict[str, Any], *, retain: bool = True, live_seconds: int = 600
) -> None:
    """Publish ``payload`` on its analysis topic again, as the worker would (QoS 1)."""
    client = MqttClient(
        ConnectOptions(
            host="127.0.0.1",
            port=stack.broker.port,
            client_id=new_client_id("ops", secrets.token_hex(4)),
            credentials=lambda: Credentials("ops", stack.service_token()),
        )
    )
    with client:
        client.wait_connected(10)
        topic = analysis_topic(payload["userId"], payload["analysisId"])
        client.publish(
            topic, json.dumps(payload).encode(), qos=1, retain=retain, expiry=live_seconds
        ).wait(10)


def _vhost(name: str) -> str:
    for args in (
        ["add_vhost", name],
        ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
    ):
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)
    return f"amqp://guest:guest@127.0.0.1:5672/{quote(name, safe='')}"


@pytest.fixture(scope="session")
def live_stack(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    from worker.service import Worker

    build_web()
    vhost = f"plantnotify_clients_{RUN_ID}"
    rabbitmq_url = _vhost(vhost)
    database_url = f"{base_settings.database_url}_clients"
    migrate(database_url)
    n8n = FakeN8n().start()
    n8n.default = N8N_DELAY
    broker = make_broker(base_settings, tmp_path_factory.mktemp("clients-mosquitto"))
    settings = settings_with(
        broker.settings,
        rabbitmq_url=rabbitmq_url,
        database_url=database_url,
        n8n_webhook_url=n8n.url,
        n8n_timeout_seconds=5.0,
        n8n_max_attempts=2,
        n8n_backoff_seconds=0.05,
        mqtt_token_ttl_seconds=REALTIME_TOKEN_TTL,
        rollout_check_seconds=ROLLOUT_CHECK_SECONDS,
        poll_seconds=POLL_SECONDS,
        worker_concurrency=4,
        worker_lease_seconds=3.0,
        worker_shutdown_grace_seconds=1.0,
        worker_unknown_analysis_grace_seconds=0.3,
        outbox_sweep_seconds=0.5,
        metrics_port_worker=0,
    )
    api = ApiServer(settings).start()
    worker = Worker(settings).start()
    try:
        if hasattr(worker, "wait_ready"):
            assert worker.wait_ready(20), "the worker did not connect to RabbitMQ and the broker"
        yield LiveStack(settings=settings, broker=broker, api=api, n8n=n8n, worker=worker)
    finally:
        worker.stop()
        api.stop()
        broker.stop()
        n8n.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
        drop_database(database_url)
