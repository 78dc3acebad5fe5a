"""The three frameworks' demo apps (from ``tests.integrations``) behind one fixture.

Every test here runs once per framework, through that framework's own test
client, against a real SQLite database seeded with the standard keys. The
peer of every request is ``127.0.0.1`` (the WSGI test clients' default; the
ASGI test client is told so), so trusted-proxy settings can name it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from apikeys.backends.sqlalchemy import api_keys_table
from apikeys.integrations import _clients
from apikeys.integrations._settings import IntegrationSettings
from tests.integrations.apps import (
    asgi_client,
    fastapi_app,
    flask_app,
    flask_client,
)
from tests.integrations.conftest import Seeded, seed
from tests.integrations.contract import AppOptions, Client
from tests.integrations.django_settings import configured, django_client

PEER = "127.0.0.1"

FRAMEWORKS = [
    pytest.param("fastapi", marks=pytest.mark.fastapi),
    pytest.param("flask", marks=pytest.mark.flask),
    pytest.param("django", marks=pytest.mark.django),
    pytest.param("django-async", marks=pytest.mark.django),
]

OpenClient = Callable[..., AbstractContextManager[Client]]
"""``open_client(url, settings=IntegrationSettings(), middleware=False)``."""


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    with configured():
        yield


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_client(framework: str) -> OpenClient:
    """Build the demo app of ``framework`` and open its test client."""

    def open_it(
        url: str, settings: IntegrationSettings | None = None, *, middleware: bool = False
    ) -> AbstractContextManager[Client]:
        options = AppOptions(settings=settings or IntegrationSettings(), middleware=middleware)
        if framework == "fastapi":
            # Peer 127.0.0.1, not Starlette's default 'testclient', which is no IP address.
            return asgi_client(fastapi_app(url, options), peer=PEER)
        if framework == "flask":
            return flask_client(flask_app(url, options))
        return django_client(url, options, asynchronous=framework == "django-async")

    return open_it


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    return seed(f"sqlite:///{tmp_path / 'keys.db'}")


def snapshot(url: str) -> dict[str, tuple[Any, ...]]:
    """Every stored key as ``id -> (owner, name, scopes, expiry, revocation)``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(
                    api_keys_table.c.id,
                    api_keys_table.c.user_id,
                    api_keys_table.c.name,
                    api_keys_table.c.scopes,
                    api_keys_table.c.expires_at,
                    api_keys_table.c.revoked_at,
                )
            ).all()
    finally:
        engine.dispose()
    return {row[0]: (row[1], row[2], tuple(row[3]), row[4], row[5]) for row in rows}


@pytest.fixture
def warnings_seen(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], list[str]]:
    """The apikeys warnings logged from here on, with the once-per-process memory reset."""
    monkeypatch.setattr(_clients, "proxy_warnings_given", set())
    caplog.set_level(logging.WARNING, logger="apikeys.integrations")

    def seen() -> list[str]:
        return [
            record.getMessage()
            for record in caplog.records
            if record.name == "apikeys.integrations" and record.levelno == logging.WARNING
        ]

    return seen
