"""``plantnotify api`` as a real process: creates and migrates a database that does not exist
yet, serves on the given port, and exits cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from plantnotify.db.session import drop_database
from plantnotify.settings import Settings
from tests.support.net import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_plantnotify_api_creates_the_database_serves_and_stops_on_sigterm(
    api_settings: Settings, tmp_path: Path
) -> None:
    fresh_db = (
        make_url(api_settings.database_url)
        .set(database=f"plantnotify_api_main_{uuid.uuid4().hex[:8]}")
        .render_as_string(hide_password=False)
    )
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": fresh_db,
        "RABBITMQ_URL": api_settings.rabbitmq_url,
        "JWT_SECRET": api_settings.jwt_secret,
        "MQTT_PORT": str(api_settings.mqtt_port),
        "WEB_DIST_DIR": str(tmp_path),
        "LOG_FORMAT": "json",
    }
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plantnotify.cli", "api", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: httpx.get(f"{base}/healthz").status_code == 200, timeout=60, what="the API"
        )
        r = httpx.post(
            f"{base}/api/v1/auth/register",
            json={"username": "main-test", "password": "a fine password"},
        )
        assert r.status_code == 201, r.text  # the new database got the schema
        assert httpx.get(f"{base}/readyz").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        text = log.read_text()
        assert "a fine password" not in text and "main-test" not in text  # user ids only
        assert '"msg": "POST /api/v1/auth/register 201"' in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drop_database(fresh_db)


def test_a_taken_port_exits_1_with_the_reason(api_settings: Settings, tmp_path: Path) -> None:
    """The common exit code for a service that cannot start (uvicorn's own would be 3)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            **os.environ,
            "ENVIRONMENT": "test",
            "DATABASE_URL": api_settings.database_url,
            "RABBITMQ_URL": api_settings.rabbitmq_url,
            "JWT_SECRET": api_settings.jwt_secret,
            "WEB_DIST_DIR": str(tmp_path),
        }
        result = subprocess.run(
            [sys.executable, "-m", "plantnotify.cli", "api", "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"the API did not start (is port {port} free?)" in result.stderr
