"""A set-up mistake answers 503 like an outage, but its error says what is wrong and the fix.

Clients must still be refused (fail closed); the operator reading the log or the
CLI's message must not be left thinking the database is down.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import apikeys
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager

pytestmark = pytest.mark.sqlalchemy

MISSING_TABLE = "the table 'apikeys_keys' does not exist"


async def _refusal(url: str, *, asynchronous: bool, **options: object) -> apikeys.APIKeysError:
    """The error ``create_api_key`` raises on a manager of ``url``."""
    if asynchronous:
        async_manager = AsyncSQLAlchemyKeyManager(url, **options)
        try:
            with pytest.raises(apikeys.BackendUnavailableError) as raised:
                await async_manager.create_api_key("user_1", "first")
        finally:
            await async_manager.close()
    else:
        manager = SQLAlchemyKeyManager(url, **options)
        try:
            with pytest.raises(apikeys.BackendUnavailableError) as raised:
                manager.create_api_key("user_1", "first")
        finally:
            manager.close()
    return raised.value


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_missing_folder_is_named(tmp_path: Path, asynchronous: bool) -> None:
    path = tmp_path / "no-such-folder" / "keys.db"
    error = await _refusal(f"sqlite:///{path}", asynchronous=asynchronous)
    assert error.status_code == 503
    assert str(path) in error.message
    assert "folder exists" in error.message


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_missing_table_is_named_with_the_fix(tmp_path: Path, asynchronous: bool) -> None:
    url = f"sqlite:///{tmp_path / 'unmigrated.db'}"
    error = await _refusal(url, asynchronous=asynchronous, create_schema=False)
    assert error.status_code == 503
    assert MISSING_TABLE in error.message
    assert "run your migrations" in error.message
    assert "create_schema=True" in error.message


@pytest.mark.postgres
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_missing_table_on_postgres_is_named(
    empty_postgres_database: str, asynchronous: bool
) -> None:
    error = await _refusal(empty_postgres_database, asynchronous=asynchronous, create_schema=False)
    assert MISSING_TABLE in error.message
    assert "@" not in error.message  # a server URL (which may hold a password) is never named


@pytest.mark.postgres
async def test_an_unreachable_server_still_says_only_unavailable(postgres_url: str) -> None:
    import sqlalchemy as sa

    url = sa.make_url(postgres_url).set(port=1).render_as_string(hide_password=False)
    error = await _refusal(url, asynchronous=False)
    assert error.message.startswith("database unavailable (OperationalError)")
    assert "does not exist" not in error.message
    assert "127.0.0.1" not in error.message
