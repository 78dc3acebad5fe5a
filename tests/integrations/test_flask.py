"""The Flask integration: the shared contract, plus what only Flask has."""

from __future__ import annotations

import pytest

from tests.integrations.apps import flask_app, flask_client
from tests.integrations.contract import ClientFactory, IntegrationContract

pytestmark = pytest.mark.flask


class TestFlaskContract(IntegrationContract):
    @pytest.fixture
    def make_client(self) -> ClientFactory:
        return lambda url, options: flask_client(flask_app(url, options))
