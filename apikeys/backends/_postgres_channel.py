"""PostgreSQL's own revocation channel: ``NOTIFY`` in the revoking transaction, ``LISTEN`` per process.

The SQLAlchemy backend on PostgreSQL sends ``pg_notify('apikeys_revocations',
<key id>)`` inside the transaction that revokes, deletes, rotates out or
cascades a key, so the announcement leaves exactly when the change commits
(and never if it rolls back). Each process listens on a connection of its own
(psycopg, outside the pool), in the thread of a
:class:`~apikeys._revocations.RevocationListener`.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from apikeys._revocations import REVOCATION_CHANNEL

CHECK_EVERY = 2.0
"""Seconds of silence after which the listening connection is checked with a query."""
CHECK_TIMEOUT = 2.0
"""Seconds that query may take before the connection counts as lost."""


def notify(key_id: str) -> sa.Select[Any]:
    """The statement announcing ``key_id``'s revocation, run in the revoking transaction."""
    return sa.select(sa.func.pg_notify(REVOCATION_CHANNEL, key_id))


class PostgresSubscription:
    """A connection that has run ``LISTEN apikeys_revocations``."""

    def __init__(self, engine: sa.Engine) -> None:
        pooled = engine.raw_connection()
        # The listening connection is this object's alone: out of the pool, it is closed
        # as it is, never rolled back on the way (a server gone by then would make
        # that rollback log an error at every shutdown).
        connection: Any = pooled.driver_connection
        pooled.detach()
        try:
            connection.autocommit = True
            connection.execute(f"LISTEN {REVOCATION_CHANNEL}")
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self._silent_for = 0.0

    def receive(self, timeout: float) -> list[str]:
        """Key ids announced, waiting up to ``timeout`` seconds for the first."""
        key_ids = [
            notice.payload for notice in self._connection.notifies(timeout=timeout, stop_after=1)
        ]
        if key_ids:
            key_ids += [notice.payload for notice in self._connection.notifies(timeout=0)]
            self._silent_for = 0.0
            return key_ids
        self._silent_for += timeout
        if self._silent_for >= CHECK_EVERY:
            # A connection dropped without a word (a proxy, a firewall) only shows when used.
            self._check()
            self._silent_for = 0.0
        return key_ids

    def _check(self) -> None:
        # A server that stops answering (paused, partitioned away) closes nothing, and the
        # query would wait for it forever, the cache trusted all along: past CHECK_TIMEOUT
        # the socket is shut, so the query fails and the listener counts the connection lost.
        watched = socket.socket(fileno=os.dup(self._connection.fileno()))
        deadline = threading.Timer(CHECK_TIMEOUT, watched.shutdown, (socket.SHUT_RDWR,))
        deadline.start()
        try:
            self._connection.execute("SELECT 1")
        finally:
            deadline.cancel()
            deadline.join()
            watched.close()

    def close(self) -> None:
        """Drop the connection."""
        self._connection.close()


class PostgresRevocationChannel:
    """Listen for revocations on the PostgreSQL database that stores the keys.

    Args:
        url: The backend's SQLAlchemy URL (``postgresql+psycopg://…``; the
            listening connection always uses psycopg).
    """

    name = "PostgreSQL LISTEN/NOTIFY"

    def __init__(self, url: str | sa.URL) -> None:
        sync_url = sa.make_url(url).set(drivername="postgresql+psycopg")
        self._engine = sa.create_engine(sync_url, poolclass=NullPool)

    def subscribe(self) -> PostgresSubscription:
        """A new connection, listening (see :class:`PostgresSubscription`)."""
        return PostgresSubscription(self._engine)

    def announce(self, key_ids: Iterable[str]) -> None:
        """Nothing to do: the revoking transaction sent its ``NOTIFY`` as it committed."""

    def close(self) -> None:
        """Release the engine."""
        self._engine.dispose()


__all__ = ["PostgresRevocationChannel", "PostgresSubscription", "notify"]
