"""Redis shared by every process of a deployment: the revocation channel and shared limits.

With ``redis_url`` set:

- a manager announces every key it revokes, deletes, rotates out or cascades
  on the ``apikeys_revocations`` pub/sub channel, and listens there for the
  others' (:class:`~apikeys._revocations.RevocationListener`). The listening
  connection never retries silently: a reconnection could miss a message, so
  every lost connection surfaces, and the listener suspends the cache until
  its new subscription is confirmed;
- failure limits count in Redis (:class:`RedisFailureLimiter`, a moving
  window of the ``limits`` library, atomic in Redis), so a flood spread over
  every worker meets one limit. While Redis cannot be reached, each process
  counts on its own, as it would without Redis: a limit is never lifted, and
  never turned into refusals of everyone;
- wrong secrets against one key id count in Redis too
  (:class:`RedisBurstDetector`), so a burst spread over every worker is
  reported, once per window for the whole deployment.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

from apikeys._errors import MissingDependencyError, RateLimitedError
from apikeys._events import BurstDetector
from apikeys._ratelimit import FailureLimiter
from apikeys._revocations import REVOCATION_CHANNEL

try:
    import limits
    import limits.aio.storage
    import limits.aio.strategies
    import limits.errors
    import limits.storage
    import limits.strategies
    import redis
    import redis.asyncio
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:
    raise MissingDependencyError(exc.name or "redis", "redis") from exc

logger = logging.getLogger("apikeys")

CONNECT_TIMEOUT = 2.0
"""Seconds to connect, to wait for a subscription to be confirmed, and for a listening
connection's ``PING`` to be answered."""


COUNTER_TIMEOUT = 0.5
"""Seconds a counter, or an announcement, waits for Redis to connect or answer. Short: a
request waits on it, and a Redis that does not answer (paused, partitioned) would otherwise
hold every request up."""


def connect(url: str, *, retries: int = 0, timeout: float = CONNECT_TIMEOUT) -> redis.Redis:
    """A client for ``url``; with ``retries=0`` it reports every lost connection."""
    return redis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), retries),
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=1,
    )


class RedisSubscription:
    """A confirmed subscription to the revocation channel.

    A server that stops answering (paused, partitioned away) closes nothing,
    and a silent channel looks like one without revocations: after a silent
    wait the subscription sends a ``PING``, and once that is unanswered for
    :data:`CONNECT_TIMEOUT` seconds it reports the connection lost.
    """

    def __init__(self, client: redis.Redis) -> None:
        # Held for as long as the subscription: a client that is garbage-collected
        # closes its pool, and the subscription's connection with it.
        self._client = client
        self._pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        self._unanswered_since: float | None = None  # when a PING left that nothing followed yet
        try:
            self._pubsub.subscribe(REVOCATION_CHANNEL)
            # The server's confirmation: from here on every announcement reaches us.
            confirmation = self._pubsub.get_message(timeout=CONNECT_TIMEOUT)
            if confirmation is None or confirmation["type"] != "subscribe":
                raise TimeoutError("Redis did not confirm the subscription")
        except BaseException:
            self.close()
            raise

    def receive(self, timeout: float) -> list[str]:
        """Key ids announced, waiting up to ``timeout`` seconds for the first.

        Raises:
            TimeoutError: The server has not answered a ``PING`` for :data:`CONNECT_TIMEOUT` seconds.
        """
        key_ids: list[str] = []
        message = self._pubsub.get_message(timeout=timeout)
        if message is not None:
            self._unanswered_since = None  # the server spoke: it is there
        elif self._unanswered_since is None:
            self._pubsub.ping()  # answered on this connection, as a "pong" message
            self._unanswered_since = time.monotonic()
        elif time.monotonic() - self._unanswered_since >= CONNECT_TIMEOUT:
            raise TimeoutError("Redis did not answer a PING on the revocation channel")
        while message is not None:
            if message["type"] == "message":
                data = message["data"]
                key_ids.append(data.decode() if isinstance(data, bytes) else str(data))
            message = self._pubsub.get_message(timeout=0)
        return key_ids

    def close(self) -> None:
        """Drop the connection."""
        self._pubsub.close()
        self._client.close()


class RedisRevocationChannel:
    """Announce revocations on Redis, and subscribe to everyone's.

    Args:
        url: The Redis server, ``redis://host:port/db`` (``rediss://`` for TLS).
    """

    name = "Redis pub/sub"

    def __init__(self, url: str) -> None:
        self.url = url
        # Publishing may retry once (a connection Redis dropped is replaced; a second
        # attempt loses nothing), each attempt briefly: the revoking call waits on it,
        # and a Redis that answers nothing is a lost channel for every subscriber anyway.
        self._client = connect(url, retries=1, timeout=COUNTER_TIMEOUT)

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


async def closed_with_the_loop(pool: redis.asyncio.ConnectionPool) -> AsyncGenerator[None, None]:
    # An event loop closes the async generators it started before it closes itself
    # (asyncio.run, uvicorn and anyio all do): the one place a library can close
    # its connections on a loop whose lifespan it does not own.
    try:
        yield
    finally:
        await pool.aclose()


RETRY_REDIS_AFTER = 1.0
"""Seconds a limiter counts in its process alone after Redis failed, before trying Redis again;
doubled after each failed retry, up to :data:`MAX_RETRY_REDIS_AFTER`."""

MAX_RETRY_REDIS_AFTER = 30.0
"""The longest a limiter counts alone before it tries Redis again."""


class RedisBackoff:
    """When to leave Redis alone after it failed.

    Every shared counter counts through one of these: once Redis failed it
    tells its owner to do without Redis (count in the process, or refuse), and
    lets one caller at a time try Redis again, after :data:`RETRY_REDIS_AFTER`
    seconds, then twice as long after each failed try (up to
    :data:`MAX_RETRY_REDIS_AFTER`); a warning says so once per outage. So a
    Redis that does not answer holds up one request per retry, for at most
    :data:`COUNTER_TIMEOUT` seconds, not every request.

    Args:
        what: What is counted, for the warning (``"client-failures"``).
        meanwhile: What the owner does while Redis is down, for the warning.
        clock: A monotonic clock for the time Redis is left alone, injectable for tests.
    """

    def __init__(
        self,
        what: str,
        *,
        meanwhile: str = "counting in this process",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.meanwhile = meanwhile
        self._clock = clock
        self._failing = False
        self._retry_after = RETRY_REDIS_AFTER
        self._down_until = 0.0
        self._lock = threading.Lock()

    def up(self) -> bool:
        """Whether this caller should ask Redis: always while it works; after a
        failure, one caller once the wait is over (the others do without it meanwhile)."""
        if not self._failing:
            return True
        with self._lock:
            now = self._clock()
            if now < self._down_until:
                return False
            self._down_until = now + self._retry_after  # this caller tries; the others wait
            return True

    def succeeded(self) -> None:
        """Redis answered: every caller asks it again."""
        if self._failing:
            with self._lock:
                self._failing = False
                self._retry_after = RETRY_REDIS_AFTER
            logger.info("apikeys reaches Redis again for %s", self.what)

    def failed(self, exc: BaseException) -> None:
        """Leave Redis alone for a while, longer after each failed try; warn once per outage."""
        with self._lock:
            first = not self._failing
            if not first:
                self._retry_after = min(self._retry_after * 2, MAX_RETRY_REDIS_AFTER)
            self._failing = True
            self._down_until = self._clock() + self._retry_after
        if first:
            logger.warning(
                "apikeys cannot reach Redis for %s (%s): %s until it is back",
                self.what,
                type(exc).__name__,
                self.meanwhile,
            )


class RedisCounters(RedisBackoff):
    """The ``limits`` storage of one Redis server, for sync callers and per event loop,
    and when to leave Redis alone after it failed (:class:`RedisBackoff`).

    Every shared failure counter (:class:`RedisFailureLimiter`,
    :class:`RedisBurstDetector`) counts through one of these, and in the
    process while Redis is down.

    Args:
        url: The Redis server.
        what: What is counted, for the warning (``"client-failures"``).
        clock: A monotonic clock for the time Redis is left alone, injectable for tests.
    """

    def __init__(self, url: str, what: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(what, clock=clock)
        options: dict[str, float | str | bool] = {
            "socket_connect_timeout": COUNTER_TIMEOUT,
            "socket_timeout": COUNTER_TIMEOUT,
        }
        self.storage = limits.storage.RedisStorage(
            url, connection_pool=None, key_prefix="apikeys", wrap_exceptions=True, **options
        )
        self._async_url = "async+" + url
        self._async_options = options
        # redis.asyncio connections belong to one event loop: a storage per loop.
        self._async_storages: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[limits.aio.storage.RedisStorage, AsyncGenerator[None, None]],
        ] = weakref.WeakKeyDictionary()

    async def async_storage(self) -> limits.aio.storage.RedisStorage:
        """The storage of the running event loop (made on first use, closed with the loop)."""
        loop = asyncio.get_running_loop()
        entry = self._async_storages.get(loop)
        if entry is None:
            pool = redis.asyncio.ConnectionPool.from_url(
                self._async_url.removeprefix("async+"), **self._async_options
            )
            options: dict[str, Any] = {"connection_pool": pool}
            storage = limits.aio.storage.RedisStorage(
                self._async_url,
                implementation="redispy",
                key_prefix="apikeys",
                wrap_exceptions=True,
                **options,
            )
            keeper = closed_with_the_loop(pool)
            await keeper.__anext__()
            entry = self._async_storages[loop] = (storage, keeper)
        return entry[0]

    async def aclose(self) -> None:
        """Close the connections of the running event loop now, not at its shutdown."""
        entry = self._async_storages.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()


class RedisFailureLimiter:
    """A :class:`~apikeys._ratelimit.FailureLimiter` counted in Redis, for every process at once.

    At most ``max_failures`` failures per key in any ``window`` seconds (a
    moving window). Sync callers use :meth:`check` and :meth:`record_failure`;
    async callers their ``_async`` twins, which never block the event loop.
    When Redis fails, the process's own limiter (``local``) counts instead for
    :data:`RETRY_REDIS_AFTER` seconds at a time, and a warning says so once.

    Args:
        url: The Redis server.
        namespace: What is counted (``"client-failures"``): keys of one
            namespace are counted together by every process.
        local: The in-process limiter used while Redis is down; its
            ``max_failures`` and ``window`` are the shared limit's too.
        clock: A monotonic clock for the time Redis is left alone, injectable for tests.
    """

    def __init__(
        self,
        url: str,
        namespace: str,
        local: FailureLimiter,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self.max_failures = local.max_failures
        self.window = local.window
        self._item = limits.RateLimitItemPerSecond(
            max(local.max_failures, 1), math.ceil(local.window), namespace=namespace
        )
        self._redis = RedisCounters(url, namespace, clock=clock)
        self._limiter = limits.strategies.MovingWindowRateLimiter(self._redis.storage)

    @property
    def enabled(self) -> bool:
        """Whether any key can be refused at all."""
        return self.local.enabled

    def _refuse(self, reset_time: float) -> RateLimitedError:
        wait = max(reset_time - time.time(), 0.001)
        return RateLimitedError(retry_after=math.ceil(wait * 1000) / 1000)

    def _ask(self, key: str, *, count: bool) -> None:
        # Both steps in one: Redis's hit() refuses without counting when the key is at its limit.
        if not self.enabled:
            return
        if self._redis.up():
            try:
                allowed = (self._limiter.hit if count else self._limiter.test)(self._item, key)
                stats = None if allowed else self._limiter.get_window_stats(self._item, key)
            except limits.errors.StorageError as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()
                if stats is None:
                    return
                raise self._refuse(stats.reset_time)
        (self.local.take if count else self.local.check)(key)

    def check(self, key: str) -> None:
        """Refuse ``key`` if it failed ``max_failures`` times in the last ``window`` seconds.

        Raises:
            RateLimitedError: With ``retry_after``: when the oldest counted failure ages out.
        """
        self._ask(key, count=False)

    def take(self, key: str) -> None:
        """Check and count one failure in a single step, atomic in Redis.

        Raises:
            RateLimitedError: ``key`` is at its limit; nothing is counted.
        """
        self._ask(key, count=True)

    def record_failure(self, key: str) -> None:
        """Count one failure against ``key``, in every process."""
        if not self.enabled:
            return
        if self._redis.up():
            try:
                self._limiter.hit(self._item, key)
            except limits.errors.StorageError as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()
                return
        self.local.record_failure(key)

    async def _async_limiter(self) -> limits.aio.strategies.MovingWindowRateLimiter:
        return limits.aio.strategies.MovingWindowRateLimiter(await self._redis.async_storage())

    async def aclose(self) -> None:
        """Close the connections of the running event loop now, not at its shutdown."""
        await self._redis.aclose()

    async def _ask_async(self, key: str, *, count: bool) -> None:
        if not self.enabled:
            return
        if self._redis.up():
            limiter = await self._async_limiter()
            try:
                allowed = await (limiter.hit if count else limiter.test)(self._item, key)
                stats = None if allowed else await limiter.get_window_stats(self._item, key)
            except limits.errors.StorageError as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()
                if stats is None:
                    return
                raise self._refuse(stats.reset_time)
        (self.local.take if count else self.local.check)(key)

    async def check_async(self, key: str) -> None:
        """The async twin of :meth:`check`."""
        await self._ask_async(key, count=False)

    async def take_async(self, key: str) -> None:
        """The async twin of :meth:`take`."""
        await self._ask_async(key, count=True)

    async def record_failure_async(self, key: str) -> None:
        """The async twin of :meth:`record_failure`."""
        if not self.enabled:
            return
        if self._redis.up():
            try:
                await (await self._async_limiter()).hit(self._item, key)
            except limits.errors.StorageError as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()
                return
        self.local.record_failure(key)


class RedisBurstDetector:
    """A :class:`~apikeys._events.BurstDetector` counted in Redis, for every process at once.

    ``threshold`` wrong secrets against one key id within ``window`` seconds (a
    moving window), wherever they land, make a burst; the first process to see
    it reports it, and no process reports that id again for ``window`` seconds
    (both steps atomic in Redis). Sync callers use :meth:`record`, async
    callers :meth:`record_async`, which never blocks the event loop.

    While Redis cannot be reached, the process's own detector (``local``)
    counts instead, for :data:`RETRY_REDIS_AFTER` seconds at a time, and a
    warning says so once: a burst spread over workers may then go unreported
    (as without Redis), one aimed at a single worker is still reported, and a
    validation never fails for it.

    Args:
        url: The Redis server.
        local: The in-process detector used while Redis is down; its
            ``threshold`` and ``window`` are the shared detector's too.
        clock: A monotonic clock for the time Redis is left alone, injectable for tests.
    """

    #: Counting asks Redis: async callers should not wait for :meth:`record`.
    shared = True

    def __init__(
        self, url: str, local: BurstDetector, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.local = local
        self.threshold = local.threshold
        self.window = local.window
        seconds = math.ceil(local.window)
        # A full window of threshold - 1 means this failure is at least the threshold-th.
        self._failures = limits.RateLimitItemPerSecond(
            max(local.threshold - 1, 1), seconds, namespace="suspicious-failures"
        )
        self._reports = limits.RateLimitItemPerSecond(1, seconds, namespace="suspicious-reports")
        self._redis = RedisCounters(url, "suspicious-failures", clock=clock)
        self._counter = limits.strategies.MovingWindowRateLimiter(self._redis.storage)
        self._reporter = limits.strategies.FixedWindowRateLimiter(self._redis.storage)

    def record(self, key_id: str) -> int | None:
        """Count a failure against ``key_id``; return the burst size when this
        process should report it."""
        if not self.threshold:
            return None
        if self._redis.up():
            try:
                under = self.threshold > 1 and self._counter.hit(self._failures, key_id)
                report = not under and self._reporter.hit(self._reports, key_id)
            except limits.errors.StorageError as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()
                return self.threshold if report else None
        return self.local.record(key_id)

    async def record_async(self, key_id: str) -> int | None:
        """The async twin of :meth:`record`."""
        if not self.threshold:
            return None
        if self._redis.up():
            storage = await self._redis.async_storage()
            try:
                counter = limits.aio.strategies.MovingWindowRateLimiter(storage)
                under = self.threshold > 1 and await counter.hit(self._failures, key_id)
                reporter = limits.aio.strategies.FixedWindowRateLimiter(storage)
                report = not under and await reporter.hit(self._reports, key_id)
            except limits.errors.StorageError as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()
                return self.threshold if report else None
        return self.local.record(key_id)

    async def aclose(self) -> None:
        """Close the connections of the running event loop now, not at its shutdown."""
        await self._redis.aclose()


__all__ = [
    "COUNTER_TIMEOUT",
    "MAX_RETRY_REDIS_AFTER",
    "RETRY_REDIS_AFTER",
    "RedisBackoff",
    "RedisBurstDetector",
    "RedisCounters",
    "RedisFailureLimiter",
    "RedisRevocationChannel",
    "RedisSubscription",
    "closed_with_the_loop",
    "connect",
]
