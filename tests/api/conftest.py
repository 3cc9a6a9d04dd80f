from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.api import User, register


@pytest.fixture
def client(api_client: TestClient) -> TestClient:
    return api_client


@pytest.fixture
def alice(api_client: TestClient) -> User:
    return register(api_client)


@pytest.fixture
def bob(api_client: TestClient) -> User:
    return register(api_client)
