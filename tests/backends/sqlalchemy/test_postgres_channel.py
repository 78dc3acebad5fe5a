"""PostgreSQL LISTEN/NOTIFY as the revocation channel, against a real server."""

from __future__ import annotations

import pytest

pytest.importorskip("psycopg")

import sqlalchemy as sa

from apikeys._cache import VerificationCache
from apikeys._models import VerifiedKey
from apikeys._revocations import RevocationListener
from apikeys.backends._postgres_channel import PostgresRevocationChannel, notify
from tests import postgres_server
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


@pytest.mark.parametrize("fault", ["terminated", "paused"])
def test_a_listening_connection_lost_suspends_the_cache_until_it_is_back(
    fault: str, postgres_url: str
) -> None:
    """The listening session ended by the server, or its server process paused (SIGSTOP: the
    connection stays open and nothing answers, as behind a network partition)."""
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
            # Ours, and perhaps an earlier test's listener that has not hung up yet.
            backends = (
                connection.execute(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE query LIKE 'LISTEN apikeys_revocations%' AND pid <> pg_backend_pid()"
                    )
                )
                .scalars()
                .all()
            )
            assert backends
            if fault == "terminated":
                connection.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM unnest(:pids) AS pid"),
                    {"pids": backends},
                )
                connection.commit()
        paused: list[int] = []
        try:
            if fault == "paused":
                try:
                    paused = postgres_server.pause(backends)
                except PermissionError as exc:
                    pytest.skip(str(exc))
            eventually(lambda: cache.lookup("secret-a") is None)
        finally:
            postgres_server.resume(paused)
        assert listener.connected.wait(WAIT)  # back, on a new connection
        cache.put(cache.digest("secret-a"), verified("a"), generation=cache.generation)
        assert cache.lookup("secret-a") == verified("a")
    finally:
        listener.close()
        channel.close()
        engine.dispose()
