"""SQLite faults: a database locked by another connection, or read-only.

Every failure is a bounded wait then ``BackendUnavailableError`` (503), never
a success for an unverified key, nothing half-written, and the same manager
works again once the fault is gone.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

import apikeys
from apikeys import BackendUnavailableError, InvalidKeyError, NewAPIKey
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager
from tests.reliability.helpers import wrong_secret_for

pytestmark = pytest.mark.sqlalchemy

TIMEOUT = 0.3
# How much longer than its timeout a refused call may take (slow CI machines).
SLACK = 2.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
def existing(db_path: Path) -> list[NewAPIKey]:
    """Two keys already in the database (the first one also validated once)."""
    with SQLAlchemyKeyManager(f"sqlite:///{db_path}") as manager:
        keys = [manager.create_api_key("u1", f"k{i}") for i in range(2)]
        manager.validate_api_key(keys[0].secret)
    return keys


@contextmanager
def locked(db_path: Path, mode: str) -> Iterator[None]:
    """Hold a lock on the database from another connection.

    ``IMMEDIATE`` takes the write lock (readers still read); ``EXCLUSIVE``
    also shuts readers out (in the default rollback-journal mode).
    """
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute(f"BEGIN {mode}")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def snapshot(db_path: Path) -> list[tuple[object, ...]]:
    """Every row, as another reader sees it."""
    with sqlite3.connect(db_path) as connection:
        return connection.execute(
            "SELECT id, user_id, name, secret_hash, expires_at, revoked_at FROM apikeys_keys"
            " ORDER BY id"
        ).fetchall()


@contextmanager
def refused_within(timeout: float) -> Iterator[None]:
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as caught:
        yield
    assert time.monotonic() - started < timeout + SLACK
    assert caught.value.status_code == 503
    assert caught.value.retry_after is not None


# --- locked --------------------------------------------------------------------------


def test_a_write_lock_makes_writes_wait_then_refuse(
    db_path: Path, existing: list[NewAPIKey]
) -> None:
    manager = SQLAlchemyKeyManager(f"sqlite:///{db_path}", timeout=TIMEOUT, cache_ttl=0)
    before = snapshot(db_path)
    with locked(db_path, "IMMEDIATE"):
        started = time.monotonic()
        with refused_within(TIMEOUT):
            manager.create_api_key("u1", "new")
        assert time.monotonic() - started >= TIMEOUT * 0.9  # it did wait for the lock
        with refused_within(TIMEOUT):
            manager.revoke_api_key(existing[0].id)
        with refused_within(TIMEOUT):
            manager.rotate_api_key(existing[0].id)
        with refused_within(TIMEOUT):
            manager.delete_api_key(existing[1].id)
    assert snapshot(db_path) == before  # nothing half-written
    # The same manager recovers at once.
    assert manager.validate_api_key(existing[0].secret).id == existing[0].id
    new = manager.create_api_key("u1", "after")
    assert manager.validate_api_key(new.secret).id == new.id
    manager.close()


def test_under_a_write_lock_reads_still_validate(
    db_path: Path, existing: list[NewAPIKey], caplog: pytest.LogCaptureFixture
) -> None:
    manager = SQLAlchemyKeyManager(
        f"sqlite:///{db_path}", timeout=TIMEOUT, cache_ttl=0, last_used_interval=0
    )
    with locked(db_path, "IMMEDIATE"), caplog.at_level(logging.WARNING):
        # The key is verified; only the last_used_at bookkeeping cannot be written.
        assert manager.validate_api_key(existing[1].secret).id == existing[1].id
        with pytest.raises(InvalidKeyError):
            manager.validate_api_key(wrong_secret_for(existing[1].secret))
    assert any("could not record use" in r.getMessage() for r in caplog.records)
    manager.close()


def test_an_exclusive_lock_refuses_validation_never_accepts(
    db_path: Path, existing: list[NewAPIKey]
) -> None:
    manager = SQLAlchemyKeyManager(f"sqlite:///{db_path}", timeout=TIMEOUT, cache_ttl=0)
    with locked(db_path, "EXCLUSIVE"):
        for key in (existing[0].secret, wrong_secret_for(existing[0].secret)):
            with refused_within(TIMEOUT):
                manager.validate_api_key(key)
        with refused_within(TIMEOUT):
            manager.list_api_keys("u1")
    assert manager.validate_api_key(existing[0].secret).id == existing[0].id
    manager.close()


async def test_async_manager_under_locks(db_path: Path, existing: list[NewAPIKey]) -> None:
    manager = AsyncSQLAlchemyKeyManager(f"sqlite:///{db_path}", timeout=TIMEOUT, cache_ttl=0)
    before = snapshot(db_path)
    with locked(db_path, "IMMEDIATE"):
        with refused_within(TIMEOUT):
            await manager.create_api_key("u1", "new")
        with refused_within(TIMEOUT):
            await manager.rotate_api_key(existing[0].id)
    with locked(db_path, "EXCLUSIVE"), refused_within(TIMEOUT):
        await manager.validate_api_key(existing[0].secret)
    assert snapshot(db_path) == before
    assert (await manager.validate_api_key(existing[0].secret)).id == existing[0].id
    await manager.close()


def test_a_rotation_failing_midway_leaves_nothing_behind(
    db_path: Path, existing: list[NewAPIKey]
) -> None:
    """Rotation retires the old key and inserts the new one in one transaction."""
    manager = SQLAlchemyKeyManager(f"sqlite:///{db_path}", cache_ttl=0)
    before = snapshot(db_path)

    def fail_the_insert(_c: object, _cur: object, statement: str, *_: object) -> None:
        if statement.startswith("INSERT INTO apikeys_keys"):
            raise sqlite3.OperationalError("disk I/O error")

    sa.event.listen(manager.engine, "before_cursor_execute", fail_the_insert)
    with pytest.raises(BackendUnavailableError):
        manager.rotate_api_key(existing[0].id)  # the retiring UPDATE ran first
    sa.event.remove(manager.engine, "before_cursor_execute", fail_the_insert)
    assert snapshot(db_path) == before
    assert manager.validate_api_key(existing[0].secret).id == existing[0].id
    manager.close()


# --- read-only -----------------------------------------------------------------------
# chmod does not stop root; SQLite's own read-only mode does, whoever runs the tests.


def read_only_url(db_path: Path) -> str:
    return f"sqlite:///file:{db_path}?mode=ro&uri=true"


def test_a_read_only_database_validates_but_refuses_writes(
    db_path: Path, existing: list[NewAPIKey]
) -> None:
    before = snapshot(db_path)
    manager = SQLAlchemyKeyManager(read_only_url(db_path), cache_ttl=0)
    assert manager.validate_api_key(existing[0].secret).id == existing[0].id
    assert manager.validate_api_key(existing[1].secret).id == existing[1].id
    with pytest.raises(InvalidKeyError):
        manager.validate_api_key(wrong_secret_for(existing[0].secret))
    assert manager.list_api_keys("u1").total == 2
    with refused_within(0):
        manager.create_api_key("u1", "new")
    with refused_within(0):
        manager.revoke_api_key(existing[0].id)
    with refused_within(0):
        manager.rotate_api_key(existing[0].id)
    with refused_within(0):
        manager.delete_api_key(existing[0].id)
    manager.close()
    assert snapshot(db_path) == before


async def test_a_read_only_database_async(db_path: Path, existing: list[NewAPIKey]) -> None:
    before = snapshot(db_path)
    manager = AsyncSQLAlchemyKeyManager(read_only_url(db_path), cache_ttl=0)
    assert (await manager.validate_api_key(existing[0].secret)).id == existing[0].id
    with refused_within(0):
        await manager.create_api_key("u1", "new")
    with refused_within(0):
        await manager.revoke_api_key(existing[1].id)
    await manager.close()
    assert snapshot(db_path) == before


def test_a_read_only_database_without_tables_is_unavailable(db_path: Path) -> None:
    sqlite3.connect(db_path).close()  # an empty database file
    manager = SQLAlchemyKeyManager(read_only_url(db_path))
    with refused_within(0):
        manager.validate_api_key(apikeys.generate_key().key)
    with refused_within(0):
        manager.create_api_key("u1", "k")
    manager.close()
