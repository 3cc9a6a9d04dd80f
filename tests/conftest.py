"""Fixtures come from tests/support/*; each part of the system adds its module here."""

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
