"""Fixtures come from tests/support/*; each part of the system adds its module here.

Every test gets exactly one tier marker, decided here from what it uses (see ``tier_of``):

- ``unit``: no PostgreSQL, RabbitMQ or broker (in-process fakes such as the FCM emulator or the
  fake N8N are fine); ``make test-fast`` runs only these (``pytest -m unit``);
- ``services``: talks to the real PostgreSQL, RabbitMQ or a broker we start;
- ``e2e``: a whole stack of processes (``live_stack``, the deploy run, a browser, the bench,
  ``plantnotify up``, the ``test_end_to_end`` modules and anything marked ``slow``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Opt-in suites (their own make targets): collected only when asked for.
collect_ignore = [] if os.environ.get("PLANTNOTIFY_CHAOS") else ["chaos"]

pytest_plugins = [
    "tests.support.services",
    "tests.support.broker",  # before modules that import it (assert rewriting)
    "tests.support.nats",
    "tests.support.api",
    "tests.support.fcm",
    "tests.support.fake_n8n",
    "tests.support.worker",
    "tests.support.live_stack",
]

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "services", "e2e")
# A fixture in a test's closure (fixtures it uses, directly or through other fixtures)
# decides its tier; so do a few places whose tests start what they need themselves.
E2E_FIXTURES = {"live_stack", "stack_run", "browser"}
E2E_PLACES = ("bench/", "test_end_to_end.py", "chaos/", "containers/")
SERVICE_FIXTURES = {
    "database_url",
    "rabbitmq_url",
    "broker",
    "broker_factory",
    "nats_cluster",
    "contract_mosquitto",
    "contract_nats",
}
# (the schemathesis run needs the API with its database, and its imports cost seconds)
SERVICE_PLACES = (
    "mosquitto/",
    "contract/",
    "plantnotify/broker/test_cli.py",
    "api/test_schemathesis.py",
)


def tier_of(item: pytest.Item) -> str:
    place = Path(str(item.fspath)).resolve().relative_to(TESTS).as_posix()
    fixtures = set(getattr(item, "fixturenames", ()))
    if (
        fixtures & E2E_FIXTURES
        or any(p in place for p in E2E_PLACES)
        or item.get_closest_marker("slow")
        or item.get_closest_marker("browser")
    ):
        return "e2e"
    if fixtures & SERVICE_FIXTURES or place.startswith(SERVICE_PLACES):
        return "services"
    return "unit"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A unit-tier run (``-m unit``: make test-fast) does not import the modules whose place alone
    makes every test in them ``services`` or ``e2e`` (they would all be deselected anyway)."""
    if config.getoption("markexpr") != "unit":
        return None
    try:
        place = collection_path.resolve().relative_to(TESTS).as_posix()
    except ValueError:
        return None
    if collection_path.is_dir():
        place += "/"
    if any(p in place for p in E2E_PLACES) or place.startswith(SERVICE_PLACES):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(getattr(pytest.mark, tier_of(item)))
