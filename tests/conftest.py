"""Fixtures come from tests/support/*; each part of the system adds its module here."""

pytest_plugins = [
    "tests.support.services",
    "tests.support.broker",
    "tests.support.fake_n8n",
    "tests.support.worker",
]
