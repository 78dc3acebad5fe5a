"""Fixtures for the web integrations: a real SQLite database seeded with keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import apikeys
from apikeys.backends.sqlalchemy import api_keys_table

OWNER = "user_123"
OTHER_OWNER = "user_456"


@dataclass(frozen=True)
class Key:
    """A seeded key: its public id and its secret."""

    id: str
    secret: str


@dataclass(frozen=True)
class Seeded:
    """The keys every integration test starts with.

    Attributes:
        admin: ``OWNER``'s key with ``read:data`` and ``keys:*``.
        reader: ``OWNER``'s key with ``read:data`` only.
        other: ``OTHER_OWNER``'s key with ``read:data`` and ``keys:*``.
        revoked: ``OWNER``'s revoked key.
        expired: ``OWNER``'s key whose expiry has passed.
    """

    url: str
    admin: Key
    reader: Key
    other: Key
    revoked: Key
    expired: Key

    def count_keys(self) -> int:
        """How many keys the database holds, all owners, revoked and expired included."""
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as connection:
                return connection.execute(
                    sa.select(sa.func.count()).select_from(api_keys_table)
                ).scalar_one()
        finally:
            engine.dispose()


def seed(url: str) -> Seeded:
    """Create the standard keys in the database at ``url``."""
    manager = apikeys.create_key_manager(url)

    def make(user: str, name: str, scopes: list[str]) -> Key:
        new = manager.create_api_key(user, name, scopes)
        return Key(new.id, new.secret)

    try:
        admin = make(OWNER, "admin", ["read:data", "keys:*"])
        reader = make(OWNER, "reader", ["read:data"])
        other = make(OTHER_OWNER, "other", ["read:data", "keys:*"])
        revoked = make(OWNER, "revoked", ["read:data"])
        manager.revoke_api_key(revoked.id, reason="test")
        expired = make(OWNER, "expired", ["read:data"])
    finally:
        manager.close()
    # No API issues an already expired key: move its expiry into the past in the table.
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                api_keys_table.update()
                .where(api_keys_table.c.id == expired.id)
                .values(expires_at=datetime.now(UTC) - timedelta(days=1))
            )
    finally:
        engine.dispose()
    return Seeded(url, admin, reader, other, revoked, expired)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


@pytest.fixture
def seeded(db_url: str) -> Seeded:
    return seed(db_url)


@pytest.fixture
def unavailable_url(tmp_path: Path) -> str:
    """A database URL that cannot be opened: its directory does not exist."""
    return f"sqlite:///{tmp_path / 'missing-dir' / 'keys.db'}"


@pytest.fixture
def sync_manager(seeded: Seeded) -> Iterator[apikeys.KeyManager]:
    manager = apikeys.create_key_manager(seeded.url)
    yield manager
    manager.close()
