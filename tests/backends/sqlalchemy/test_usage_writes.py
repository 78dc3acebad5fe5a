"""``last_used_at`` is written off the request path: noted in memory, flushed in one statement."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from apikeys import ConfigurationError
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager
from tests.eventually import WAIT, eventually

pytestmark = pytest.mark.sqlalchemy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Short enough that a test sees the flusher run, long enough that it runs after the validations.
FLUSH_INTERVAL = 0.05


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keys.db'}"
    postgres_url: str = request.getfixturevalue("postgres_url")
    return postgres_url


@pytest.fixture
def reader(url: str) -> Iterator[SQLAlchemyKeyManager]:
    """Another process's view of the store: it sees only what was written."""
    with SQLAlchemyKeyManager(url, last_used_interval=0) as made:
        yield made


class Statements:
    """The statements an engine sends, with whether each was an executemany."""

    def __init__(self, engine: sa.Engine) -> None:
        self.seen: list[tuple[str, bool]] = []
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(
        self, _c: object, _cur: object, statement: str, _p: object, _ctx: object, many: bool
    ) -> None:
        self.seen.append((statement, many))

    @property
    def updates(self) -> list[tuple[str, bool]]:
        return [(s, many) for s, many in self.seen if s.lstrip().upper().startswith("UPDATE")]


def test_validations_write_nothing_and_one_statement_writes_every_key_used(
    url: str, reader: SQLAlchemyKeyManager
) -> None:
    manager = SQLAlchemyKeyManager(url, cache_ttl=0, last_used_interval=3600)
    keys = [manager.create_api_key("usage-owner", f"k{n}") for n in range(3)]
    statements = Statements(manager.engine)
    for _ in range(5):
        for key in keys:
            manager.validate_api_key(key.secret)
    assert statements.updates == []
    # The process that used the keys sees the uses at once; another sees them once written.
    assert all(manager.get_api_key(key.id).last_used_at is not None for key in keys)
    assert all(reader.get_api_key(key.id).last_used_at is None for key in keys)
    manager.close()
    assert len(statements.updates) == 1
    assert statements.updates[0][1]  # one executemany for the whole batch
    assert all(reader.get_api_key(key.id).last_used_at is not None for key in keys)


def test_the_flusher_writes_every_interval_and_another_process_sees_it(
    url: str, reader: SQLAlchemyKeyManager
) -> None:
    manager = SQLAlchemyKeyManager(url, cache_ttl=0, last_used_interval=FLUSH_INTERVAL)
    new = manager.create_api_key("usage-owner", "k")
    manager.validate_api_key(new.secret)
    eventually(lambda: reader.get_api_key(new.id).last_used_at is not None)
    manager.close()


def test_a_flush_never_moves_last_used_back(url: str, reader: SQLAlchemyKeyManager) -> None:
    # Two processes flush in either order: the later use stays.
    later, earlier = (SQLAlchemyKeyManager(url, last_used_interval=3600) for _ in range(2))
    new = later.create_api_key("usage-owner", "k")
    later.usage.record(new.id, T0 + timedelta(seconds=10))
    earlier.usage.record(new.id, T0)
    later.close()
    earlier.close()
    assert reader.get_api_key(new.id).last_used_at == T0 + timedelta(seconds=10)


def test_a_failed_flush_keeps_its_batch_for_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    manager = SQLAlchemyKeyManager(url, cache_ttl=0, last_used_interval=FLUSH_INTERVAL)
    new = manager.create_api_key("usage-owner", "k")
    refusing = True

    def refuse_updates(_c: object, _cur: object, statement: str, *_: object) -> None:
        if refusing and statement.startswith("UPDATE"):
            raise sqlite3.OperationalError("attempt to write a readonly database")

    sa.event.listen(manager.engine, "before_cursor_execute", refuse_updates)
    with caplog.at_level(logging.WARNING, logger="apikeys"):
        assert manager.validate_api_key(new.secret).id == new.id
        eventually(lambda: "could not write last_used_at" in caplog.text)
    refusing = False
    with SQLAlchemyKeyManager(url, last_used_interval=0) as reader:
        eventually(lambda: reader.get_api_key(new.id).last_used_at is not None)
    manager.close()


def test_interval_zero_writes_during_the_validation(url: str, reader: SQLAlchemyKeyManager) -> None:
    manager = SQLAlchemyKeyManager(url, cache_ttl=0, last_used_interval=0)
    new = manager.create_api_key("usage-owner", "k")
    manager.validate_api_key(new.secret)
    assert reader.get_api_key(new.id).last_used_at is not None
    manager.close()


async def test_the_async_flusher_writes_every_interval_and_at_close(
    url: str, reader: SQLAlchemyKeyManager
) -> None:
    manager = AsyncSQLAlchemyKeyManager(url, cache_ttl=0, last_used_interval=FLUSH_INTERVAL)
    first = await manager.create_api_key("usage-owner", "first")
    await manager.validate_api_key(first.secret)
    deadline = asyncio.get_running_loop().time() + WAIT
    while reader.get_api_key(first.id).last_used_at is None:
        assert asyncio.get_running_loop().time() < deadline, "the flusher task never wrote"
        await asyncio.sleep(0.001)  # the flusher is a task on this loop: let it run
    await manager.close()
    manager = AsyncSQLAlchemyKeyManager(url, cache_ttl=0, last_used_interval=3600)
    second = await manager.create_api_key("usage-owner", "second")
    await manager.validate_api_key(second.secret)
    assert (await manager.get_api_key(second.id)).last_used_at is not None
    assert reader.get_api_key(second.id).last_used_at is None
    await manager.close()
    assert reader.get_api_key(second.id).last_used_at is not None


@pytest.mark.parametrize("interval", [-1, float("inf"), float("nan"), 1e300])
def test_an_interval_out_of_range_is_a_configuration_error(interval: float) -> None:
    with pytest.raises(ConfigurationError, match="last_used_interval"):
        SQLAlchemyKeyManager("sqlite://", last_used_interval=interval)


def test_a_manager_dropped_without_close_leaves_no_thread_behind(tmp_path: Path) -> None:
    def flusher_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "apikeys-usage-flusher"}

    before = flusher_threads()
    manager = SQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'keys.db'}", cache_ttl=0)
    manager.validate_api_key(manager.create_api_key("usage-owner", "k").secret)
    (started,) = flusher_threads() - before
    collected = weakref.ref(manager)
    del manager
    gc.collect()
    assert collected() is None
    started.join(WAIT)
    assert not started.is_alive()
