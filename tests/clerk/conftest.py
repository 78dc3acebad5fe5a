"""Fixtures of the Clerk backend tests: the fake, managers of both flavours, the spec."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from apikeys.testing import FakeClerk
from tests.contract.conftest import SyncFacade

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO_ROOT.parent / "shared" / "clerk" / "2026-05-12.yml"


Twin = SyncFacade
"""A manager of either flavour behind one sync interface (the contract suite's facade)."""


def record_sleeps(manager: Any) -> list[float]:
    """Make a Clerk manager record its backoff pauses instead of sleeping them."""
    recorded: list[float] = []
    if inspect.iscoroutinefunction(manager.validate_api_key):

        async def record(seconds: float) -> None:
            recorded.append(seconds)

        manager._sleep = record
    else:
        manager._sleep = recorded.append
    return recorded


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
    """Clerk's official OpenAPI spec, from ``../shared/clerk/`` beside the repository."""
    if not SPEC_PATH.is_file():
        pytest.fail(
            f"Clerk's OpenAPI spec is missing: expected it at {SPEC_PATH}"
            " (the shared/clerk folder next to the repository checkout)"
        )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20x faster on 20k lines
    spec: dict[str, Any] = yaml.load(SPEC_PATH.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    return spec
