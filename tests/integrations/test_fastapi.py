"""The FastAPI integration: the shared contract, plus what only FastAPI has."""

from __future__ import annotations

import pytest

from tests.integrations.apps import asgi_client, fastapi_app
from tests.integrations.contract import ClientFactory, IntegrationContract

pytestmark = pytest.mark.fastapi


class TestFastAPIContract(IntegrationContract):
    @pytest.fixture
    def make_client(self) -> ClientFactory:
        return lambda url, options: asgi_client(fastapi_app(url, options))
