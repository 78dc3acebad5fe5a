"""The backends the contract runs on, and the facade its tests call them through.

Tests talk to a :class:`SyncFacade`, which calls a sync manager directly and
drives an async manager's coroutines on an event loop of its own, so one test
body checks both twins. To add a backend, append a :class:`BackendCase` to
:data:`BACKENDS` (see ``conftest.py`` for capabilities).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from apikeys._keyformat import generate_key, parse_key
from apikeys.testing import FakeClerk


class SyncFacade:
    """Call any manager, sync or async, through the sync interface."""

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
        """Run a coroutine on this facade's loop (async flavour only)."""
        assert self.loop is not None
        return self.loop.run_until_complete(coroutine)


class MovableClock:
    """The managers' wall clock in the contract: real time, moved forward by tests.

    It keeps running, so keys created one after the other are ordered as in
    production; :meth:`advance` stands in for waiting.
    """

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward, as if that much time had passed."""
        self.offset += timedelta(seconds=seconds)


@dataclass(frozen=True)
class BackendCase:
    """How to build one backend's managers for the contract suite.

    ``make(flavour, workdir, request, options)`` returns a sync or async manager;
    ``options`` always hold the test's ``clock``. Managers made with the same
    ``workdir`` share a store when the backend has the ``shared_store`` capability. ``new_user_id()`` makes an owner id the
    backend accepts (Clerk takes only ``user_…``/``org_…`` ids of its own shape).
    """

    name: str
    make: Callable[[str, Path, pytest.FixtureRequest, dict[str, Any]], Any]
    wrong_secret_for: Callable[[str], str]
    unknown_key_like: Callable[[str], str]
    lacks: frozenset[str] = frozenset()
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())
    new_user_id: Callable[[], str] = field(default=lambda: f"user_{uuid.uuid4().hex[:12]}")


def _sqlalchemy_manager(
    url_for: Callable[[Path, pytest.FixtureRequest], str],
) -> Callable[..., Any]:
    def make(
        flavour: str, workdir: Path, request: pytest.FixtureRequest, options: dict[str, Any]
    ) -> Any:
        from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager

        url = url_for(workdir, request)
        # Built directly, not from configuration: the clock is no setting.
        if flavour == "sync":
            return SQLAlchemyKeyManager(url, **options)
        return AsyncSQLAlchemyKeyManager(url, **options)

    return make


def _local_wrong_secret(secret: str) -> str:
    parsed = parse_key(secret)
    return generate_key(parsed.prefix, id=parsed.id).key


def _local_unknown_key(secret: str) -> str:
    return generate_key(parse_key(secret).prefix).key


def _clerk_manager(
    flavour: str, workdir: Path, request: pytest.FixtureRequest, options: dict[str, Any]
) -> Any:
    # One fake Clerk instance per test (per workdir): managers of a test share it,
    # and its clock.
    fake: FakeClerk = request.getfixturevalue("clerk_fake")
    # Clerk has no database: quotas are counted in Redis, which it needs for them.
    options.setdefault("redis_url", request.getfixturevalue("shared_redis").url)
    # Every fake is the same Clerk instance (one secret key): with the session's Redis, every
    # test would draw on one verification budget. The budget is tested in tests/backends/clerk.
    options.setdefault("verification_budget", None)
    if flavour == "sync":
        return fake.key_manager(**options)
    return fake.async_key_manager(**options)


def _clerk_other_secret(secret: str) -> str:
    # Another secret of exactly the shape Clerk issues (``ak_`` + base64 of 32 bytes).
    return "ak_" + base64.b64encode(secrets.token_bytes(32)).decode()


BACKENDS: list[BackendCase] = [
    BackendCase(
        name="sqlite-file",
        make=_sqlalchemy_manager(lambda workdir, _: f"sqlite:///{workdir / 'keys.db'}"),
        wrong_secret_for=_local_wrong_secret,
        unknown_key_like=_local_unknown_key,
        marks=(pytest.mark.sqlalchemy,),
    ),
    BackendCase(
        name="sqlite-memory",
        make=_sqlalchemy_manager(lambda *_: "sqlite:///:memory:"),
        wrong_secret_for=_local_wrong_secret,
        unknown_key_like=_local_unknown_key,
        lacks=frozenset({"shared_store"}),
        marks=(pytest.mark.sqlalchemy,),
    ),
    BackendCase(
        name="postgresql",
        make=_sqlalchemy_manager(lambda _, request: request.getfixturevalue("postgres_url")),
        wrong_secret_for=_local_wrong_secret,
        unknown_key_like=_local_unknown_key,
        marks=(pytest.mark.sqlalchemy, pytest.mark.postgres),
    ),
    BackendCase(
        name="clerk",
        make=_clerk_manager,
        wrong_secret_for=_clerk_other_secret,
        unknown_key_like=_clerk_other_secret,
        marks=(pytest.mark.clerk,),
        new_user_id=FakeClerk.new_user_id,
    ),
]

FLAVOURS = ("sync", "async")
