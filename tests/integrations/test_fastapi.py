"""The FastAPI integration: the shared contract, plus what only FastAPI has."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.integrations.apps import asgi_client, fastapi_app
from tests.integrations.conftest import Seeded, seed
from tests.integrations.contract import ClientFactory, IntegrationContract
from tests.integrations.servers import running_server, uvicorn_command

pytestmark = pytest.mark.fastapi


class TestFastAPIContract(IntegrationContract):
    @pytest.fixture
    def make_client(self) -> ClientFactory:
        return lambda url, options: asgi_client(fastapi_app(url, options))


# --- property-based requests against the /api-keys OpenAPI schema, on a real server -------


@pytest.fixture(scope="module")
def served_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'keys.db'}"
    keys = seed(url)
    with running_server(uvicorn_command, "examples.fastapi_app:app", url) as base_url:
        yield base_url, keys


@pytest.mark.e2e
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_keys_schema_never_answers_500(
    served_example: tuple[str, Seeded], mode: GenerationMode
) -> None:
    base_url, keys = served_example
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    management = schema.include(path_regex="^/api-keys")
    auth = {"Authorization": f"Bearer {keys.admin.secret}"}

    @given(case=management.as_strategy(mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def no_server_error(case: schemathesis.Case) -> None:
        # Drop the credentials schemathesis made up from the security schemes: a
        # second, different key would be refused before the handler ever ran.
        case.headers = {
            name: value
            for name, value in (case.headers or {}).items()
            if name.lower() not in ("authorization", "x-api-key")
        }
        response = case.call(headers=auth)
        assert response.status_code < 500, response.text
        assert keys.admin.secret not in response.text

    no_server_error()
