"""Redis shared by every process of a deployment: the revocation channel.

With ``redis_url`` set, a manager announces every key it revokes, deletes,
rotates out or cascades on the ``apikeys_revocations`` pub/sub channel, and
listens there for the others' (:class:`~apikeys._revocations.RevocationListener`).
Connections never retry silently: a reconnection could miss a message, so
every lost connection surfaces, and the listener suspends the cache until its
new subscription is confirmed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from apikeys._errors import MissingDependencyError
from apikeys._revocations import REVOCATION_CHANNEL

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:
    raise MissingDependencyError("redis", "redis") from exc

logger = logging.getLogger("apikeys")

CONNECT_TIMEOUT = 2.0
"""Seconds to connect (and to wait for a subscription to be confirmed)."""


def connect(url: str, *, retries: int = 0) -> redis.Redis:
    """A client for ``url``; with ``retries=0`` it reports every lost connection."""
    return redis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), retries),
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=CONNECT_TIMEOUT,
        health_check_interval=1,
    )


class RedisSubscription:
    """A confirmed subscription to the revocation channel."""

    def __init__(self, client: redis.Redis) -> None:
        self._pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        try:
            self._pubsub.subscribe(REVOCATION_CHANNEL)
            # The server's confirmation: from here on every announcement reaches us.
            confirmation = self._pubsub.get_message(timeout=CONNECT_TIMEOUT)
            if confirmation is None or confirmation["type"] != "subscribe":
                raise TimeoutError("Redis did not confirm the subscription")
        except BaseException:
            self._pubsub.close()
            raise

    def receive(self, timeout: float) -> list[str]:
        """Key ids announced, waiting up to ``timeout`` seconds for the first."""
        key_ids: list[str] = []
        message = self._pubsub.get_message(timeout=timeout)
        while message is not None:
            if message["type"] == "message":
                data = message["data"]
                key_ids.append(data.decode() if isinstance(data, bytes) else str(data))
            message = self._pubsub.get_message(timeout=0)
        return key_ids

    def close(self) -> None:
        """Drop the connection."""
        self._pubsub.close()


class RedisRevocationChannel:
    """Announce revocations on Redis, and subscribe to everyone's.

    Args:
        url: The Redis server, ``redis://host:port/db`` (``rediss://`` for TLS).
    """

    name = "Redis pub/sub"

    def __init__(self, url: str) -> None:
        self.url = url
        # Publishing may retry: a second attempt loses nothing.
        self._client = connect(url, retries=2)

    def subscribe(self) -> RedisSubscription:
        """A new connection, subscribed (see :class:`RedisSubscription`)."""
        return RedisSubscription(connect(self.url))

    def announce(self, key_ids: Iterable[str]) -> None:
        """Tell every process that ``key_ids`` were revoked; a failure is logged, not raised.

        The revocation is already in the store: a process that misses the
        announcement because Redis is down has lost its subscription too, and
        serves nothing from its cache until it is back.
        """
        try:
            pipeline = self._client.pipeline(transaction=False)
            for key_id in key_ids:
                pipeline.publish(REVOCATION_CHANNEL, key_id)
            pipeline.execute()
        except redis.RedisError as exc:
            logger.warning(
                "apikeys could not announce a revocation on Redis (%s)", type(exc).__name__
            )

    def close(self) -> None:
        """Drop the publishing connection."""
        self._client.close()


__all__ = ["RedisRevocationChannel", "RedisSubscription", "connect"]
