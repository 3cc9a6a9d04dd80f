"""One full run of the whole system as real processes, shared by the deployment tests.

Every part runs the way its container runs it: `plantnotify broker|api|worker|bridge` (and the
dev stand-ins `n8n-standin`, `fcm-emulator`), settings in the environment, JSON logs at DEBUG.
The run: register, log in, get an MQTT token, register an FCM device, connect a "phone" that
never confirms, upload an image with a known X-Request-ID, receive the Completed event over
MQTT, see the bridge push it to the FCM emulator after the grace period, scrape every metrics
endpoint, then SIGTERM everything at once. The tests read what the run recorded: logs
(test_log_hygiene), exit statuses (test_shutdown), metrics (test_metrics_live).
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from plantnotify.contracts.topics import analyses_filter
from plantnotify.db.session import drop_database, migrate
from plantnotify.settings import Settings
from tests.deploy.procs import Part, http_ok, scrape, service_env, start_all, stop_all
from tests.support.broker import build_plugin
from tests.support.mqtt import connect
from tests.support.net import free_port, port_open, wait_for
from tests.support.otlp import Collector

FLOW_TIMEOUT = 60.0
# A bound that catches a hang (a thread that never ends, a grace waited out), not a speed
# target: parts exit within 1-2 s of SIGTERM on an idle machine, but six of them finalising at
# once on a loaded 2-core test machine can take several seconds each. In Docker each has its
# own stop timeout (10 s by default; the worker gets 45 s for its 30 s grace, here 2 s).
STOP_WITHIN_SECONDS = 30.0


@dataclass
class StackRun:
    parts: dict[str, Part]
    secrets: dict[str, str]  # what must never be logged, by name
    request_id: str
    user_id: str
    analysis_id: str
    metrics: dict[str, str] = field(default_factory=dict)  # part -> /metrics text
    # Issue 16: the trace the upload continued, every span the parts exported to the collector
    # stand-in, the owner's delivery timeline (read before the stop), and the run's database.
    trace_id: str = ""
    collector: Collector | None = None
    delivery: dict[str, Any] = field(default_factory=dict)
    database_url: str = ""


def sample_value(text: str, sample: str) -> float:
    """The value of one sample (``name{labels}``) in a Prometheus text page; -1 if absent."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else -1.0


def _noisy_png() -> bytes:
    """An image whose base64 cannot occur by chance anywhere else."""
    img = Image.frombytes("RGB", (64, 64), secrets.token_bytes(64 * 64 * 3))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="session")
def rabbit_user(rabbitmq_url: str) -> Iterator[tuple[str, str]]:
    """A RabbitMQ user with a real password on its own vhost, so a leaked URL would show."""
    name = f"pn_stack_{secrets.token_hex(4)}"
    password = "rabbit-" + secrets.token_hex(12)
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", name], check=True, capture_output=True)
    subprocess.run([*ctl, "add_user", name, password], check=True, capture_output=True)
    subprocess.run(
        [*ctl, "set_permissions", "-p", name, name, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield password, f"amqp://{name}:{password}@127.0.0.1:5672/{quote(name, safe='')}"
    finally:
        subprocess.run([*ctl, "delete_vhost", name], check=False, capture_output=True)
        subprocess.run([*ctl, "delete_user", name], check=False, capture_output=True)


def _stack(
    base: Settings, database: str, rabbit: tuple[str, str], tmp: Path, otlp_endpoint: str
) -> tuple[dict[str, Part], dict[str, int], dict[str, str]]:
    ports = {
        name: free_port()
        for name in ("api", "mqtt", "ws", "standin", "fcm", "worker", "bridge", "broker")
    }
    # Its own database: the bridge's catch-up would otherwise push other tests' events, and the
    # worker's outbox compete with theirs. PostgreSQL trusts loopback here, so a password in the
    # URL is accepted and unused: it only has to stay out of the logs.
    db_password = "pg-" + secrets.token_hex(12)
    database_url = database.replace("postgres@", f"postgres:{db_password}@", 1)
    assert db_password in database_url
    env = service_env(
        base,
        LOG_LEVEL="DEBUG",
        DATABASE_URL=database_url,
        RABBITMQ_URL=rabbit[1],
        MQTT_PORT=str(ports["mqtt"]),
        MQTT_WS_PORT=str(ports["ws"]),
        MQTT_DATA_DIR=str(tmp / "mosquitto"),
        MQTT_PLUGIN_PATH=str(build_plugin()),
        API_PORT=str(ports["api"]),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{ports['api']}",
        STANDIN_PORT=str(ports["standin"]),
        STANDIN_DELAY_SECONDS="0.2",
        N8N_WEBHOOK_URL=f"http://127.0.0.1:{ports['standin']}/webhook/plant-analysis",
        FCM_EMULATOR_PORT=str(ports["fcm"]),
        FCM_ENDPOINT=f"http://127.0.0.1:{ports['fcm']}",
        FALLBACK_GRACE_SECONDS="1",
        METRICS_PORT_WORKER=str(ports["worker"]),
        METRICS_PORT_BRIDGE=str(ports["bridge"]),
        METRICS_PORT_BROKER=str(ports["broker"]),
        WORKER_SHUTDOWN_GRACE_SECONDS="2",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_endpoint,
    )
    logs = tmp / "logs"

    def part(name: str, ready: Any, *args: str) -> Part:
        return Part(name, [name, *args], env, ready, logs / name)

    parts = {
        "broker": part(
            "broker",
            lambda: (
                http_ok(f"http://127.0.0.1:{ports['broker']}/metrics")
                and "plantnotify_broker_up 1.0" in scrape(ports["broker"])
            ),
        ),
        "n8n-standin": part("n8n-standin", lambda: port_open(ports["standin"])),
        "fcm-emulator": part(
            "fcm-emulator", lambda: http_ok(f"http://127.0.0.1:{ports['fcm']}/healthz")
        ),
        "api": part("api", lambda: http_ok(f"http://127.0.0.1:{ports['api']}/readyz")),
        "worker": part("worker", lambda: port_open(ports["worker"])),
        "bridge": part("bridge", lambda: port_open(ports["bridge"])),
    }
    secret_values = {
        "JWT secret": base.jwt_secret,
        "database password": db_password,
        "RabbitMQ password": rabbit[0],
    }
    return parts, ports, secret_values


@pytest.fixture(scope="session")
def stack_run(
    base_settings: Settings,
    rabbit_user: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackRun]:
    database = f"{base_settings.database_url}_stack"
    migrate(database)
    with Collector() as collector:
        parts, ports, secret_values = _stack(
            base_settings, database, rabbit_user, tmp_path_factory.mktemp("stack"), collector.url
        )
        try:
            start_all([parts["broker"]])  # the others connect to it at start-up
            start_all(p for name, p in parts.items() if name != "broker")
            run = _flow(parts, ports, secret_values)
            run.collector, run.database_url = collector, database
            yield run
        finally:
            for p in parts.values():
                p.kill()
            drop_database(database)


def _flow(parts: dict[str, Part], ports: dict[str, int], secret_values: dict[str, str]) -> StackRun:
    api = f"http://127.0.0.1:{ports['api']}/api/v1"
    username = "farmer-" + secrets.token_hex(5)
    password = "pw-" + secrets.token_urlsafe(16)
    fcm_token = "fcm-" + secrets.token_urlsafe(40)
    request_id = "req-" + secrets.token_hex(8)
    trace_id = secrets.token_hex(16)  # the caller's trace, continued by the upload
    image = _noisy_png()

    with httpx.Client(timeout=20) as http:
        r = http.post(f"{api}/auth/register", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
        user_id = r.json()["userId"]
        r = http.post(f"{api}/auth/login", json={"username": username, "password": password})
        access = r.json()["accessToken"]
        auth = {"Authorization": f"Bearer {access}"}
        realtime = http.post(f"{api}/realtime/token", headers=auth).json()
        r = http.post(
            f"{api}/devices", headers=auth, json={"token": fcm_token, "platform": "android"}
        )
        assert r.status_code == 201, r.text

        # A live session that never confirms: the bridge must push after the grace period.
        phone = connect(ports["mqtt"], realtime["username"], realtime["token"], f"{user_id}-phone")
        try:
            assert phone.subscribe(analyses_filter(user_id)) == [1]
            r = http.post(
                f"{api}/plantanalyses/async",
                headers={
                    **auth,
                    "X-Request-ID": request_id,
                    "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
                },
                files={"image": ("leaf.png", image, "image/png")},
                data={"cropType": "tomato"},
            )
            assert r.status_code == 202, r.text
            analysis_id = r.json()["analysisId"]
            deadline = time.monotonic() + FLOW_TIMEOUT
            event: dict[str, Any] = {}
            while event.get("status") != "Completed":  # progress events come first
                left = deadline - time.monotonic()
                event = json.loads(phone.wait_message(timeout=max(left, 0.1)).payload)
                assert event["analysisId"] == analysis_id
                assert event["status"] != "Failed", event
        finally:
            phone.close()
        pushes = wait_for(
            lambda: http.get(
                f"http://127.0.0.1:{ports['fcm']}/messages", params={"token": fcm_token}
            ).json(),
            timeout=FLOW_TIMEOUT,
            what="the FCM push",
        )
        assert pushes[0]["message"]["data"]["analysisId"] == analysis_id

        # A browser opened afterwards: the retained event arrives over WebSocket and its
        # receipt says when, how and which device (the delivery timeline's "delivered" step).
        browser_id = f"{user_id}-web-{secrets.token_hex(3)}"
        browser = connect(
            ports["ws"], realtime["username"], realtime["token"], browser_id, transport="websockets"
        )
        try:
            assert browser.subscribe(analyses_filter(user_id)) == [1]
            retained: dict[str, Any] = {}
            while retained.get("status") != "Completed":
                retained = json.loads(browser.wait_message(timeout=FLOW_TIMEOUT).payload)
            receipt = {
                "eventId": retained["eventId"],
                "receivedAt": int(time.time() * 1000),
                "transport": "ws",
                "clientId": browser_id,
            }
            browser.publish(realtime["topics"]["receipts"], json.dumps(receipt).encode())
        finally:
            browser.close()
        delivery = wait_for(
            lambda: (
                (d := http.get(f"{api}/plantanalyses/{analysis_id}/delivery", headers=auth).json())
                and any(st["step"] == "delivered" for st in d["steps"])
                and d
            ),
            timeout=FLOW_TIMEOUT,
            what="the browser's receipt on the delivery timeline",
        )

        # Counters move a moment after what they count (the bridge records the push after FCM
        # answered; the plugin publishes its counters every 5 s): wait until they show the run.
        expected = {
            "worker": ("plantnotify_outbox_events_published_total", 1),
            "bridge": ('plantnotify_bridge_deliveries_total{status="sent"}', 1),
            # the phone, the worker, the bridge and the exporter at least
            "broker": ('plantnotify_mqtt_connects_total{result="accepted"}', 4),
        }
        for part_name, (sample, at_least) in expected.items():
            port = ports[part_name]
            try:
                wait_for(
                    lambda port=port, sample=sample, at_least=at_least: (  # type: ignore[misc]
                        sample_value(scrape(port), sample) >= at_least
                    ),
                    timeout=15,
                    what=f"{sample} >= {at_least}",
                )
            except AssertionError:
                raise AssertionError(f"{part_name} metrics:\n{scrape(port)}") from None
        metrics = {
            "api": http.get(f"http://127.0.0.1:{ports['api']}/metrics").text,
            "worker": scrape(ports["worker"]),
            "bridge": scrape(ports["bridge"]),
            "broker": scrape(ports["broker"]),
        }

    stop_all(parts.values(), within=STOP_WITHIN_SECONDS)
    return StackRun(
        parts=parts,
        secrets={
            **secret_values,
            "access token": access,
            "access token signature": access.rsplit(".", 1)[-1],
            "MQTT token": realtime["token"],
            "MQTT token signature": realtime["token"].rsplit(".", 1)[-1],
            "password": password,
            "username": username,
            "FCM token": fcm_token,
            "image base64": base64.b64encode(image).decode()[200:260],
            "Authorization header": "Bearer ",
        },
        request_id=request_id,
        user_id=user_id,
        analysis_id=analysis_id,
        metrics=metrics,
        trace_id=trace_id,
        delivery=delivery,
    )
