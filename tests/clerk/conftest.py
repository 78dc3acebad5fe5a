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

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO_ROOT.parent / "shared" / "clerk" / "2026-05-12.yml"


class Twin:
    """Call a sync or an async Clerk manager through one sync interface."""

    def __init__(self, manager: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        self.manager = manager
        self.loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.manager, name)
        if self.loop is None or not inspect.iscoroutinefunction(attribute):
            return attribute
        loop = self.loop

        def call(*args: Any, **kwargs: Any) -> Any:
            return loop.run_until_complete(attribute(*args, **kwargs))

        return call

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine on this twin's loop (async flavour only)."""
        assert self.loop is not None
        return self.loop.run_until_complete(coroutine)


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
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return spec
