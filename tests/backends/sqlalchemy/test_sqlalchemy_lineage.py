"""The SQLAlchemy backend's lineage beyond the contract: the upgrade of version 1
databases, one transaction per cascade, and creations racing revocations."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from apikeys import (
    BackendUnavailableError,
    InvalidInputError,
    KeyLimitReachedError,
    RevokedKeyError,
)
from apikeys.backends.sqlalchemy import (
    SCHEMA_VERSION,
    AsyncSQLAlchemyKeyManager,
    SQLAlchemyKeyManager,
    api_keys_table,
    schema_version_table,
)

pytestmark = pytest.mark.sqlalchemy

VERSION_1_COLUMNS = (
    *("id", "user_id", "name", "secret_hash", "hint", "scopes", "metadata"),
    *("created_at", "expires_at", "last_used_at", "revoked_at", "revocation_reason"),
)


def _version_1_tables(engine: sa.Engine) -> None:
    """The tables as release 1 made them: no ``created_by`` column, no index on it
    (nor anything later versions added)."""
    old = sa.MetaData()
    columns = [
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in api_keys_table.c
        if c.name in VERSION_1_COLUMNS
    ]
    sa.Table(api_keys_table.name, old, *columns)
    sa.Table(schema_version_table.name, old, *(c._copy() for c in schema_version_table.c))
    old.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(old.tables[schema_version_table.name]).values(component="keys", version=1)
        )


def test_a_version_1_database_is_upgraded_on_first_use(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    _version_1_tables(engine)
    with (
        SQLAlchemyKeyManager(database_url, create_schema=False) as before,
        pytest.raises(BackendUnavailableError),  # the column is missing
    ):
        before.create_api_key("u1", "needs the upgrade")
    with SQLAlchemyKeyManager(database_url) as manager:
        parent = manager.create_api_key("u1", "parent")
        child = manager.create_api_key("u1", "child", created_by=parent.id)
        manager.revoke_api_key(parent.id)
        with pytest.raises(RevokedKeyError):
            manager.validate_api_key(child.secret)
    inspector = sa.inspect(engine)
    assert "created_by" in {c["name"] for c in inspector.get_columns(api_keys_table.name)}
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes(api_keys_table.name)}
    assert indexes["ix_apikeys_keys_created_by"] == ["created_by"]
    with engine.connect() as connection:
        version = connection.execute(sa.select(schema_version_table.c.version)).scalar_one()
    assert version == SCHEMA_VERSION == 3
    engine.dispose()


def test_a_cascade_is_one_transaction(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/keys.db"
    with SQLAlchemyKeyManager(url) as manager:
        parent = manager.create_api_key("u1", "parent")
        child = manager.create_api_key("u1", "child", created_by=parent.id)
        grandchild = manager.create_api_key("u1", "grandchild", created_by=child.id)

        # Fail the statement that revokes the descendants: nothing may stay changed.
        def fail_cascade(_conn: object, _cur: object, statement: str, *_: object) -> None:
            if statement.lstrip().startswith("WITH RECURSIVE") and "UPDATE" in statement:
                raise RuntimeError("the database went away")

        sa.event.listen(manager.engine, "before_cursor_execute", fail_cascade)
        with pytest.raises(RuntimeError):
            manager.revoke_api_key(parent.id)
        sa.event.remove(manager.engine, "before_cursor_execute", fail_cascade)
        for key in (parent, child, grandchild):
            assert manager.get_api_key(key.id).active  # rolled back as a whole
        manager.revoke_api_key(parent.id)
        assert not manager.get_api_key(grandchild.id).active


def _race(
    url: str, rounds: int, make: Callable[[], SQLAlchemyKeyManager]
) -> list[tuple[bool, bool]]:
    """Revoke a creator while its child is being created, ``rounds`` times.

    Returns, per round, (was the child created, is it active now).
    """
    outcomes: list[tuple[bool, bool]] = []
    with make() as revoker, make() as creator_side:
        for n in range(rounds):
            parent = revoker.create_api_key(f"owner-{n}", "parent")
            start = threading.Barrier(2)
            made: list[str] = []

            def create(start: threading.Barrier, made: list[str], owner: str, by: str) -> None:
                start.wait()
                with contextlib.suppress(InvalidInputError):
                    made.append(creator_side.create_api_key(owner, "child", created_by=by).id)

            worker = threading.Thread(target=create, args=(start, made, f"owner-{n}", parent.id))
            worker.start()
            start.wait()
            revoker.revoke_api_key(parent.id)
            worker.join(10)
            active = bool(made) and revoker.get_api_key(made[0]).active
            outcomes.append((bool(made), active))
    return outcomes


def test_a_child_created_while_its_creator_is_revoked_never_survives(
    database_url: str,
) -> None:
    outcomes = _race(database_url, 40, lambda: SQLAlchemyKeyManager(database_url))
    assert not any(active for _, active in outcomes)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_rotating_an_expired_key_counts_against_the_limit(database_url: str, flavour: str) -> None:
    """An expired key frees its place; its replacement takes a new one, like a new key."""
    with SQLAlchemyKeyManager(database_url, max_active_keys_per_owner=2) as manager:
        expiring = manager.create_api_key("u1", "expiring", expiration=timedelta(days=1))
        manager.create_api_key("u1", "kept")
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:  # a day has passed: it expired
        connection.execute(
            sa.update(api_keys_table)
            .where(api_keys_table.c.id == expiring.id)
            .values(expires_at=datetime.now(UTC) - timedelta(hours=1))
        )
    engine.dispose()
    if flavour == "sync":
        with SQLAlchemyKeyManager(database_url, max_active_keys_per_owner=2) as manager:
            manager.create_api_key("u1", "in its place")  # two active again
            with pytest.raises(KeyLimitReachedError):
                manager.rotate_api_key(expiring.id, expiration=timedelta(days=365))
            assert manager.list_api_keys("u1").total == 2
    else:

        async def rotate() -> None:
            async with AsyncSQLAlchemyKeyManager(
                database_url, max_active_keys_per_owner=2
            ) as manager:
                await manager.create_api_key("u1", "in its place")
                with pytest.raises(KeyLimitReachedError):
                    await manager.rotate_api_key(expiring.id, expiration=timedelta(days=365))
                assert (await manager.list_api_keys("u1")).total == 2

        asyncio.run(rotate())
