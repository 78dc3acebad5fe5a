"""The module-level functions and the default managers behind them, on real SQLite."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import apikeys
from apikeys import AsyncKeyManager, ConfigurationError, InsufficientScopeError, InvalidKeyError

pytest.importorskip("sqlalchemy")
from apikeys.backends.sqlalchemy import (
    AsyncSQLAlchemyKeyManager,
    SQLAlchemyKeyManager,
)

TRACKED_BACKEND = '''
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager

closed = []
DATABASE = "sqlite://"


class TrackedAsyncManager(AsyncSQLAlchemyKeyManager):
    """A real async SQLite manager that records being closed."""

    @classmethod
    def from_settings(cls, url, settings):
        return cls(DATABASE, key_prefix=settings.key_prefix)

    async def close(self):
        closed.append(self)
        await super().close()


class TrackedManager(SQLAlchemyKeyManager):
    """A real SQLite manager that records being closed."""

    @classmethod
    def from_settings(cls, url, settings):
        # Built from a "module:Class" path, so the database is chosen here.
        return cls("sqlite://", key_prefix=settings.key_prefix)

    def close(self):
        closed.append(self)
        super().close()
'''


@pytest.fixture(autouse=True)
def reset_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start without configuration and leave none behind."""
    monkeypatch.delenv("APIKEYS_BACKEND", raising=False)
    apikeys.configure()
    yield
    apikeys.configure()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'default.db'}"


@pytest.fixture
def tracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An importable module whose manager class records close() calls."""
    name = "apikeys_test_tracked_backend"
    (tmp_path / f"{name}.py").write_text(TRACKED_BACKEND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return __import__(name)


async def test_configure_url_then_module_level_functions(database_url: str) -> None:
    apikeys.configure(url=database_url, key_prefix="dflt")
    new = apikeys.create_api_key("user_1", "CI", "read:data", timedelta(days=1), metadata={"a": 1})
    assert new.secret.startswith("dflt_1")
    verified = apikeys.validate_api_key(new.secret, required_scopes=["read:data"])
    assert (verified.user_id, verified.id, verified.metadata) == ("user_1", new.id, {"a": 1})
    with pytest.raises(InsufficientScopeError):
        apikeys.validate_api_key(new.secret, required_scopes=["admin"])
    with pytest.raises(InvalidKeyError):
        apikeys.validate_api_key(new.secret[:-1] + "x")

    # The async twins use an async manager on the same database.
    anew = await apikeys.acreate_api_key("user_2", "worker", ["write:data"])
    assert (await apikeys.avalidate_api_key(anew.secret)).user_id == "user_2"
    assert (await apikeys.avalidate_api_key(new.secret)).user_id == "user_1"
    assert apikeys.validate_api_key(anew.secret, required_scopes="write:data").id == anew.id
    with pytest.raises(InsufficientScopeError):
        await apikeys.avalidate_api_key(anew.secret, required_scopes=["read:data"])

    assert type(apikeys.get_key_manager()) is SQLAlchemyKeyManager
    assert type(apikeys.get_async_key_manager()) is AsyncSQLAlchemyKeyManager


async def test_module_level_creation_takes_limits(database_url: str) -> None:
    apikeys.configure(url=database_url)
    new = apikeys.create_api_key("user_1", "limited", rate_limit="100/1m", quota="500")
    verified = apikeys.validate_api_key(new.secret)
    assert (str(verified.rate_limit), str(verified.quota)) == ("100/1m", "500")
    anew = await apikeys.acreate_api_key("user_2", "limited", quota="100000/30d")
    averified = await apikeys.avalidate_api_key(anew.secret)
    assert (averified.rate_limit, str(averified.quota)) == (None, "100000/30d")
    with pytest.raises(apikeys.InvalidInputError):
        apikeys.create_api_key("user_1", "bad", rate_limit="fast")


def test_default_managers_are_built_once(database_url: str) -> None:
    apikeys.configure(url=database_url)
    seen: list[apikeys.KeyManager] = []
    start = threading.Barrier(8)

    def fetch() -> None:
        start.wait()
        seen.append(apikeys.get_key_manager())

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(manager is seen[0] for manager in seen)


def test_reconfiguring_builds_a_new_manager(tmp_path: Path) -> None:
    apikeys.configure(url=f"sqlite:///{tmp_path / 'one.db'}")
    first = apikeys.get_key_manager()
    new = apikeys.create_api_key("u", "n")
    apikeys.configure(url=f"sqlite:///{tmp_path / 'two.db'}")
    assert apikeys.get_key_manager() is not first
    with pytest.raises(InvalidKeyError):  # another database: the key is unknown there
        apikeys.validate_api_key(new.secret)


def test_the_environment_is_used_when_nothing_is_configured(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIKEYS_BACKEND", database_url)
    new = apikeys.create_api_key("env_user", "n")
    assert apikeys.validate_api_key(new.secret).user_id == "env_user"


async def test_explicit_sync_and_async_managers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'explicit.db'}"
    sync_manager = apikeys.create_key_manager(url, key_prefix="mine")
    async_manager = apikeys.create_async_key_manager(url, key_prefix="mine")
    try:
        apikeys.configure(sync_manager)
        apikeys.configure(async_manager)
        assert apikeys.get_key_manager() is sync_manager
        assert apikeys.get_async_key_manager() is async_manager
        new = apikeys.create_api_key("u", "n")
        assert new.secret.startswith("mine_1")
        assert (await apikeys.avalidate_api_key(new.secret)).id == new.id
        anew = await apikeys.acreate_api_key("u", "n2")
        assert apikeys.validate_api_key(anew.secret).id == anew.id
    finally:
        sync_manager.close()
        await async_manager.close()


async def test_an_explicit_manager_replaces_only_its_side(tmp_path: Path) -> None:
    apikeys.configure(url=f"sqlite:///{tmp_path / 'configured.db'}")
    explicit = apikeys.create_async_key_manager(f"sqlite:///{tmp_path / 'explicit.db'}")
    try:
        apikeys.configure(explicit)
        assert apikeys.get_async_key_manager() is explicit
        assert type(apikeys.get_key_manager()) is SQLAlchemyKeyManager  # still from the url
        new = await apikeys.acreate_api_key("u", "n")
        with pytest.raises(InvalidKeyError):  # the sync side uses the other database
            apikeys.validate_api_key(new.secret)
    finally:
        await explicit.close()


def test_a_manager_and_a_url_together_are_refused(database_url: str) -> None:
    apikeys.configure(url=database_url)
    manager = apikeys.create_key_manager("sqlite://")
    try:
        with pytest.raises(ConfigurationError, match="not both"):
            apikeys.configure(manager, url="sqlite://")
        with pytest.raises(ConfigurationError, match="not both"):
            apikeys.configure(manager, cache_ttl=0)
        current = apikeys.get_key_manager()  # nothing changed: still from database_url
        assert current is not manager
        assert isinstance(current, SQLAlchemyKeyManager)
        assert current.engine.url.database == database_url.removeprefix("sqlite:///")
    finally:
        manager.close()


def test_managers_built_from_configuration_are_closed_on_reset(
    tracked: Any, tmp_path: Path
) -> None:
    apikeys.configure(url=f"{tracked.__name__}:TrackedManager")
    built = apikeys.get_key_manager()
    assert type(built).__name__ == "TrackedManager"
    apikeys.configure()
    assert tracked.closed == [built]


def test_a_replaced_built_manager_is_closed(tracked: Any, tmp_path: Path) -> None:
    apikeys.configure(url=f"{tracked.__name__}:TrackedManager")
    built = apikeys.get_key_manager()
    mine = tracked.TrackedManager("sqlite://")
    apikeys.configure(mine)
    assert tracked.closed == [built]
    assert apikeys.get_key_manager() is mine
    mine.close()


def aiosqlite_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]


def test_a_built_async_manager_is_closed_on_reset_outside_a_loop(
    tracked: Any, tmp_path: Path
) -> None:
    tracked.DATABASE = f"sqlite+aiosqlite:///{tmp_path / 'async.db'}"
    threads_before = aiosqlite_threads()
    apikeys.configure(url=f"{tracked.__name__}:TrackedAsyncManager")

    async def use() -> AsyncKeyManager:
        new = await apikeys.acreate_api_key("u", "n")
        await apikeys.avalidate_api_key(new.secret)
        return apikeys.get_async_key_manager()

    built = asyncio.run(use())
    apikeys.configure()
    assert tracked.closed == [built]
    # Its connection (and aiosqlite's worker thread) is gone, not left to the GC.
    deadline = time.monotonic() + 5
    while aiosqlite_threads() != threads_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert aiosqlite_threads() == threads_before


async def test_a_built_async_manager_is_closed_on_reset_inside_a_loop(
    tracked: Any, tmp_path: Path
) -> None:
    tracked.DATABASE = f"sqlite+aiosqlite:///{tmp_path / 'async.db'}"
    apikeys.configure(url=f"{tracked.__name__}:TrackedAsyncManager")
    await apikeys.acreate_api_key("u", "n")
    built = apikeys.get_async_key_manager()
    apikeys.configure(url="sqlite://")  # from async code: closed on this loop
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    await asyncio.wait_for(asyncio.gather(*others), timeout=5)  # the scheduled close
    assert tracked.closed == [built]


async def test_a_passed_in_async_manager_is_never_closed(tracked: Any) -> None:
    mine = tracked.TrackedAsyncManager("sqlite://")
    apikeys.configure(mine)
    apikeys.configure()
    await asyncio.sleep(0.01)
    assert tracked.closed == []
    new = await mine.create_api_key("u", "n")
    assert (await mine.validate_api_key(new.secret)).id == new.id
    await mine.close()


def test_a_manager_passed_in_is_never_closed_by_configure(tracked: Any) -> None:
    mine = tracked.TrackedManager("sqlite://")
    apikeys.configure(mine)
    apikeys.configure(url="sqlite://")
    apikeys.configure()
    assert tracked.closed == []
    new = mine.create_api_key("u", "n")  # still the caller's to use
    assert mine.validate_api_key(new.secret).id == new.id
    mine.close()


def test_nothing_configured_and_no_environment_uses_clerk() -> None:
    # Without CLERK_SECRET_KEY the Clerk default cannot work: a configuration error,
    # raised at first use and not at import or configure().
    with pytest.raises(ConfigurationError):
        apikeys.create_api_key("u", "n")


def test_bad_configuration_surfaces_at_first_use(database_url: str) -> None:
    apikeys.configure(url=database_url, cache_ttl=-1)
    with pytest.raises(ConfigurationError, match="cache_ttl"):
        apikeys.validate_api_key("apk_1whatever")
