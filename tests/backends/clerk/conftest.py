"""Fixtures of the Clerk backend tests: the fake, managers of both flavours, the spec."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

from apikeys.testing import FakeClerk
from tests import prism_server
from tests.backends.clerk.openapi import SPEC_PATH, load_spec
from tests.backends.clerk.twins import Twin


@pytest.fixture
def fake() -> FakeClerk:
    """A fresh fake Clerk instance."""
    return FakeClerk()


@pytest.fixture
def user_id(fake: FakeClerk) -> str:
    """A Clerk-shaped user id unique to the test."""
    return fake.new_user_id()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Which twin a test runs against."""
    value: str = request.param
    return value


@pytest.fixture
def make_twin(fake: FakeClerk, flavour: str) -> Iterator[Callable[..., Twin]]:
    """Build managers of the current flavour wired to ``fake``; closed after the test."""
    loop = asyncio.new_event_loop() if flavour == "async" else None
    made: list[Twin] = []

    def make(**options: Any) -> Twin:
        options.setdefault("cache_ttl", 0)
        if flavour == "sync":
            twin = Twin(fake.key_manager(**options), None)
        else:
            twin = Twin(fake.async_key_manager(**options), loop)
        made.append(twin)
        return twin

    try:
        yield make
    finally:
        for twin in made:
            twin.close()
        if loop is not None:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


@pytest.fixture
def twin(make_twin: Callable[..., Twin]) -> Twin:
    """A manager of the current flavour with its cache off, so every call reaches the fake."""
    return make_twin()


@pytest.fixture(scope="session")
def clerk_spec() -> dict[str, Any]:
    """The spec (see :func:`load_spec`); hypothesis tests call ``load_spec()`` instead,
    so that a failing example's report does not print the whole spec."""
    return load_spec()


def _prism_unavailable(reason: str) -> NoReturn:
    if os.environ.get("APIKEYS_REQUIRE_PRISM") == "1":
        pytest.fail(f"Prism is required (APIKEYS_REQUIRE_PRISM=1) but {reason}")
    pytest.skip(
        f"Prism tests skipped: {reason}; run tests/backends/clerk/prism.sh (needs node and npm)"
    )


@pytest.fixture(scope="session")
def prism_url() -> Iterator[str]:
    """Base URL of a Stoplight Prism mock of Clerk's spec, started on 127.0.0.1 for the session.

    Prism serves the spec's paths without ``/v1``. Skips when node/npm are
    missing or Prism cannot be installed, unless ``APIKEYS_REQUIRE_PRISM=1``.
    """
    if not SPEC_PATH.is_file():
        pytest.fail(f"Clerk's OpenAPI spec is missing: expected it at {SPEC_PATH}")
    try:
        with prism_server.served() as url:
            yield url
    except prism_server.PrismUnavailable as exc:
        _prism_unavailable(str(exc))
