"""`python -m plantnotify.healthcheck` against real endpoints: our broker, an HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from plantnotify.healthcheck import Unhealthy, check
from plantnotify.settings import Settings
from tests.support.broker import BrokerHandle
from tests.support.net import free_port


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_http_healthy_only_on_2xx(http_port: int) -> None:
    assert "HTTP 200" in check(f"http://127.0.0.1:{http_port}/readyz")
    with pytest.raises(Unhealthy, match="HTTP 503"):
        check(f"http://127.0.0.1:{http_port}/not-ready")
    with pytest.raises(Unhealthy):
        check(f"http://127.0.0.1:{free_port()}/readyz", timeout=1)


def test_tcp(http_port: int) -> None:
    assert "accepting" in check(f"tcp://127.0.0.1:{http_port}")
    with pytest.raises(Unhealthy):
        check(f"tcp://127.0.0.1:{free_port()}", timeout=1)


def _env_for(settings: Settings, **changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env["JWT_SECRET"] = settings.jwt_secret
    return {**env, **changes}


def _run(url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plantnotify.healthcheck", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_mqtt_healthy_when_the_broker_accepts_our_service_token(broker: BrokerHandle) -> None:
    result = _run(f"mqtt://127.0.0.1:{broker.port}", _env_for(broker.settings))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CONNECT accepted" in result.stdout


def test_mqtt_unhealthy_when_the_broker_refuses_the_token(broker: BrokerHandle) -> None:
    """A broker whose secret differs from the services' is not healthy: nothing could connect."""
    wrong = _env_for(broker.settings, JWT_SECRET="another-secret-" + "7" * 32)
    result = _run(f"mqtt://127.0.0.1:{broker.port}", wrong)
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: ")
    assert "Traceback" not in result.stderr


def test_unknown_scheme_and_usage() -> None:
    with pytest.raises(Unhealthy, match="cannot check"):
        check("ftp://127.0.0.1:21")
    assert _run("", {**os.environ}).returncode == 1
