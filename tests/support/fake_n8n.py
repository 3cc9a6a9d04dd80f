"""The fake N8N webhook (``devtools.fake_n8n``) as a fixture: one per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.fake_n8n import DEFAULT_RESULT, FakeN8n

__all__ = ["DEFAULT_RESULT", "FakeN8n", "fake_n8n"]


@pytest.fixture
def fake_n8n() -> Iterator[FakeN8n]:
    fake = FakeN8n().start()
    yield fake
    fake.stop()
