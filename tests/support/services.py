"""Session fixtures for the real PostgreSQL and RabbitMQ: a fresh database and vhost per run.

Services that are down are started (scripts/ensure-services.sh), never skipped.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from plantnotify.db.session import drop_database, migrate
from plantnotify.settings import Settings, load_settings
from tests.support.net import port_open

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"


def _ensure_services() -> None:
    if port_open(5432) and port_open(5672):
        return
    subprocess.run([str(ROOT / "scripts" / "ensure-services.sh")], check=True)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    _ensure_services()
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/plantnotify_test_{RUN_ID}"
    migrate(url)
    yield url
    from plantnotify.db.session import engine_for

    engine_for.cache_clear()
    drop_database(url)


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A vhost of our own, so parallel runs and leftovers never share queues."""
    _ensure_services()
    vhost = f"plantnotify_test_{RUN_ID}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    yield f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True)


@pytest.fixture(scope="session")
def base_settings(database_url: str, rabbitmq_url: str) -> Settings:
    """Settings pointing at the test database and vhost (no broker yet)."""
    return load_settings(
        environment="test",
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        jwt_secret="test-secret-" + secrets.token_hex(16),
        # Suites register hundreds of users from one address; the limits have their own tests
        # (tests/api/test_rate_limits.py) on an app with them on.
        rate_limits_enabled=False,
    )
