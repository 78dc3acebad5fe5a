"""A pooled PostgreSQL connection whose session the server ended is replaced, and the
request it was to carry runs once more on a new one; a failure on a new connection is
a 503, never a pass. The pool pings no connection before use, so this is the only
guard against a connection dropped while idle (a restart, an idle timeout)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("psycopg")

import sqlalchemy as sa

import apikeys
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager
from tests.eventually import eventually

pytestmark = [pytest.mark.sqlalchemy, pytest.mark.postgres]

# cache_ttl=0: every validation reads the database (and no revocation listener runs).
OPTIONS = {"cache_ttl": 0, "timeout": 2.0, "max_active_keys_per_owner": 0}


@pytest.fixture
def named_url(postgres_url: str) -> str:
    """The server's URL with an application name that tells this test's sessions apart."""
    name = f"apikeys-dead-{uuid.uuid4().hex[:12]}"
    return (
        sa.make_url(postgres_url)
        .update_query_dict({"application_name": name})
        .render_as_string(hide_password=False)
    )


@pytest.fixture
def admin(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def end_sessions(admin: sa.Engine, url: str) -> int:
    """End every session the server has for ``url``'s application name, as a restart would;
    return how many there were, once they are gone."""
    name = sa.make_url(url).query["application_name"]
    sessions = sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :name")
    with admin.connect() as connection:
        pids = list(connection.execute(sessions, {"name": name}).scalars())
        connection.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM unnest(:pids) AS pid"), {"pids": pids}
        )

    def gone() -> bool:
        with admin.connect() as connection:
            return connection.execute(sessions, {"name": name}).first() is None

    eventually(gone)
    return len(pids)


class EngineLog:
    """What the engine's events saw: statements sent and disconnections detected."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements: list[str] = []
        self.disconnects = 0
        sa.event.listen(engine, "before_cursor_execute", self._statement)
        sa.event.listen(engine, "handle_error", self._error)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def _error(self, context: sa.engine.ExceptionContext) -> None:
        self.disconnects += context.is_disconnect

    def validation_reads(self) -> int:
        return sum("UNION ALL" in statement for statement in self.statements)


def test_a_validation_on_a_dropped_connection_is_read_again_on_a_new_one(
    named_url: str, admin: sa.Engine
) -> None:
    with SQLAlchemyKeyManager(named_url, **OPTIONS) as manager:
        new = manager.create_api_key("user_1", "k")
        assert manager.validate_api_key(new.secret).id == new.id
        log = EngineLog(manager.engine)
        assert end_sessions(admin, named_url) >= 1
        assert manager.validate_api_key(new.secret).id == new.id
        # The read failed on the dead connection, then ran again; the engine's events saw both.
        assert log.disconnects == 1
        assert log.validation_reads() == 2
        with pytest.raises(apikeys.InvalidKeyError):
            manager.validate_api_key(new.secret[:-1] + ("x" if new.secret[-1] != "x" else "y"))


def test_a_write_on_a_dropped_connection_runs_again_on_a_new_one(
    named_url: str, admin: sa.Engine
) -> None:
    with SQLAlchemyKeyManager(named_url, **OPTIONS) as manager:
        owner = f"user-{uuid.uuid4().hex[:8]}"  # the database is shared with other tests
        manager.create_api_key(owner, "first")
        log = EngineLog(manager.engine)
        assert end_sessions(admin, named_url) >= 1
        second = manager.create_api_key(owner, "second")
        assert log.disconnects == 1
        assert manager.revoke_api_key(second.id).revoked_at is not None
        names = [key.name for key in manager.list_api_keys(owner, include_invalid=True).items]
        assert sorted(names) == ["first", "second"]  # stored once


def test_the_async_manager_replaces_a_dropped_connection_too(
    named_url: str, admin: sa.Engine
) -> None:
    async def scenario() -> None:
        async with AsyncSQLAlchemyKeyManager(named_url, **OPTIONS) as manager:
            new = await manager.create_api_key("user_1", "k")
            assert (await manager.validate_api_key(new.secret)).id == new.id
            await asyncio.to_thread(end_sessions, admin, named_url)
            assert (await manager.validate_api_key(new.secret)).id == new.id
            await asyncio.to_thread(end_sessions, admin, named_url)
            assert (await manager.create_api_key("user_1", "again")).name == "again"

    asyncio.run(scenario())


@pytest.mark.parametrize("pooled", [True, False])
def test_a_read_whose_session_ends_on_each_try_is_refused(
    pooled: bool, named_url: str, admin: sa.Engine
) -> None:
    """Each try's session ended just before its read: a 503, never a pass. A dropped pooled
    connection is replaced once; a connection opened for the request is not tried again,
    so an outage never doubles a request's wait."""
    with SQLAlchemyKeyManager(named_url, **OPTIONS) as manager:
        new = manager.create_api_key("user_1", "k")
        if not pooled:
            manager.engine.dispose()  # the next request opens a new connection
        log = EngineLog(manager.engine)

        def end_session(connection: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
            if "UNION ALL" in statement:
                end_sessions(admin, named_url)

        sa.event.listen(manager.engine, "before_cursor_execute", end_session)
        with pytest.raises(apikeys.BackendUnavailableError):
            manager.validate_api_key(new.secret)
        sa.event.remove(manager.engine, "before_cursor_execute", end_session)
        assert log.validation_reads() == (2 if pooled else 1)
        assert manager.validate_api_key(new.secret).id == new.id
