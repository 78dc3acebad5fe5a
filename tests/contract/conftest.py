"""The backend contract: which backends run it, and how.

Every test in this folder runs once per backend in
:data:`tests.contract.backends.BACKENDS` and per flavour (``sync`` and
``async``), through a :class:`~tests.contract.backends.SyncFacade`.

To add a backend, append a :class:`~tests.contract.backends.BackendCase`. A
capability it lacks goes in ``lacks``; tests that need it carry
``@pytest.mark.capability("name")`` and are reported as skipped with the
reason, never silently dropped. Capabilities:

- ``last_used``: validation records ``last_used_at``.
- ``shared_store``: two managers built the same way see the same keys.
- ``rotation_grace``: ``rotate_api_key(grace=...)`` keeps the old key alive for a while.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from apikeys.testing import FakeClerk
from tests.contract.backends import BACKENDS, FLAVOURS, BackendCase, MovableClock, SyncFacade


@pytest.fixture
def clock() -> MovableClock:
    """The wall clock of the test's managers, and of the fake Clerk: move it, never sleep."""
    return MovableClock()


@pytest.fixture
def clerk_fake(clock: MovableClock) -> FakeClerk:
    """The fake Clerk instance the ``clerk`` case's managers talk to."""
    return FakeClerk(clock=clock)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize(
            "backend",
            [pytest.param(case, id=case.name, marks=case.marks) for case in BACKENDS],
        )
    if "flavour" in metafunc.fixturenames:
        metafunc.parametrize("flavour", FLAVOURS)


@pytest.fixture
def make_manager(
    backend: BackendCase,
    flavour: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    clock: MovableClock,
) -> Iterator[Callable[..., SyncFacade]]:
    """Build managers of the backend under test, on the test's ``clock``; all are
    closed after the test."""
    for marker in request.node.iter_markers("capability"):
        capability = marker.args[0]
        if capability in backend.lacks:
            pytest.skip(f"{backend.name} lacks the {capability!r} capability (documented)")
    loop = asyncio.new_event_loop() if flavour == "async" else None
    made: list[SyncFacade] = []

    def make(**options: Any) -> SyncFacade:
        options.setdefault("clock", clock)
        facade = SyncFacade(backend.make(flavour, tmp_path, request, options), loop)
        made.append(facade)
        return facade

    try:
        yield make
    finally:
        for facade in made:
            facade.close()
        if loop is not None:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


@pytest.fixture
def manager(make_manager: Callable[..., SyncFacade]) -> SyncFacade:
    """A manager of the backend under test, default settings."""
    return make_manager()


@pytest.fixture
def user_id(backend: BackendCase) -> str:
    """An owner id unique to the test, so tests sharing a database never meet."""
    return backend.new_user_id()
