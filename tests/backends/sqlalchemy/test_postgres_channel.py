"""PostgreSQL LISTEN/NOTIFY as the revocation channel, against a real server."""

from __future__ import annotations

import pytest

pytest.importorskip("psycopg")

import sqlalchemy as sa

from apikeys._cache import VerificationCache
from apikeys._models import VerifiedKey
from apikeys._revocations import RevocationListener
from apikeys.backends._postgres_channel import PostgresRevocationChannel, notify
from tests.eventually import WAIT, eventually


def verified(key_id: str) -> VerifiedKey:
    return VerifiedKey(id=key_id, user_id="user_1", name="k")


def test_a_committed_notify_reaches_the_listener_and_a_rolled_back_one_does_not(
    postgres_url: str,
) -> None:
    cache = VerificationCache(ttl=60)
    channel = PostgresRevocationChannel(postgres_url)
    listener = RevocationListener(channel.subscribe, [cache], name=channel.name, poll=0.05)
    engine = sa.create_engine(postgres_url)
    try:
        listener.start()
        assert listener.connected.wait(WAIT)
        for key_id in ("a", "b", "c"):
            cache.put(cache.digest(f"secret-{key_id}"), verified(key_id))
        with engine.connect() as connection:
            connection.execute(notify("b"))
            connection.rollback()  # a revoke that failed: nothing announced
            connection.execute(notify("a"))
            connection.commit()
        eventually(lambda: cache.lookup("secret-a") is None)
        assert cache.lookup("secret-b") == verified("b")
        assert cache.lookup("secret-c") == verified("c")
    finally:
        listener.close()
        channel.close()
        engine.dispose()


def test_a_listening_connection_killed_by_the_server_suspends_the_cache_until_it_is_back(
    postgres_url: str,
) -> None:
    cache = VerificationCache(ttl=60)
    channel = PostgresRevocationChannel(postgres_url)
    listener = RevocationListener(
        channel.subscribe, [cache], name=channel.name, poll=0.05, retry=0.05
    )
    engine = sa.create_engine(postgres_url)
    try:
        listener.start()
        assert listener.connected.wait(WAIT)
        cache.put(cache.digest("secret-a"), verified("a"))
        with engine.connect() as connection:
            killed = connection.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN apikeys_revocations%' AND pid <> pg_backend_pid()"
                )
            ).all()
            connection.commit()
        assert killed
        eventually(lambda: cache.lookup("secret-a") is None)
        assert listener.connected.wait(WAIT)  # back, on a new connection
        cache.put(cache.digest("secret-a"), verified("a"), generation=cache.generation)
        assert cache.lookup("secret-a") == verified("a")
    finally:
        listener.close()
        channel.close()
        engine.dispose()
