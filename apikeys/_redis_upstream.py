"""The upstream guard of :mod:`apikeys._upstream`, shared by every process through Redis.

- the pause is one key (``apikeys:<namespace>:pause``) set with a ``PX``
  expiry, so it ends by itself everywhere at once;
- a known secret is one key per digest (``apikeys:<namespace>:known:<hex>``)
  living :data:`~apikeys._upstream.KNOWN_SECRET_TTL`; the digest is keyed by
  the store's own credentials, so what Redis holds tells nothing of a secret;
- the budget is a moving window of the ``limits`` library, atomic in Redis.

One round trip asks for the pause and a digest together. Every answer is
written to the process's own guard as well; while Redis cannot be reached
(:class:`~apikeys._redis.RedisBackoff` decides when to try again), that guard
answers alone: a pause or a known secret this process saw still counts, the
budget is counted in the process, and nothing fails for it.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any

from apikeys._errors import MissingDependencyError
from apikeys._upstream import BUDGET_KEY, KNOWN_SECRET_TTL, MemoryUpstreamGuard, Outlook

try:
    import limits
    import limits.aio.strategies
    import limits.errors
    import limits.strategies
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff

    from apikeys._redis import (
        COUNTER_TIMEOUT,
        RedisBackoff,
        RedisCounters,
        closed_with_the_loop,
        connect,
    )
    from apikeys._redis_meter import UNREACHABLE
except ImportError as exc:
    raise MissingDependencyError(exc.name or "redis", "redis") from exc


class RedisUpstreamGuard:
    """An :class:`~apikeys._upstream.UpstreamGuard` in Redis, for every process at once.

    Args:
        url: The Redis server.
        local: This process's guard: written along with Redis, and asked alone
            while Redis is down; its budget is the shared one's too.
        namespace: Names this guard's keys: one per protected store.
        outage_clock: A monotonic clock for the time Redis is left alone after
            a failure, injectable for tests.
    """

    def __init__(
        self,
        url: str,
        local: MemoryUpstreamGuard,
        *,
        namespace: str,
        outage_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.local = local
        self._url = url
        self._pause_key = f"apikeys:{namespace}:pause"
        self._known_prefix = f"apikeys:{namespace}:known:"
        self._client = connect(url, timeout=COUNTER_TIMEOUT)
        self._redis = RedisBackoff(
            f"the pause and known keys of {namespace}",
            meanwhile="keeping them in this process",
            clock=outage_clock,
        )
        self._counters = RedisCounters(url, f"{namespace}-budget", clock=outage_clock)
        self._budget: limits.RateLimitItem | None = None
        if local.budget is not None:
            self._budget = limits.RateLimitItemPerSecond(
                local.budget.limit,
                int(local.budget.window.total_seconds()),
                namespace=f"{namespace}-budget",
            )
        # redis.asyncio connections belong to one event loop: a client per loop.
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[redis.asyncio.Redis, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    def _known_key(self, digest: bytes) -> str:
        return self._known_prefix + digest.hex()

    def _merged(self, outlook: Outlook, answers: list[Any]) -> Outlook:
        """The local outlook with Redis's answers (``PTTL`` of the pause, ``EXISTS`` of a digest)."""
        self._redis.succeeded()
        paused_for = max(outlook.paused_for, int(answers[0]) / 1000)
        known = outlook.known or (len(answers) > 1 and bool(answers[1]))
        return Outlook(paused_for, known)

    def look(self, digest: bytes | None) -> Outlook:
        """See :meth:`~apikeys._upstream.UpstreamGuard.look`."""
        outlook = self.local.look(digest)
        if self._redis.up():
            pipeline = self._client.pipeline(transaction=False)
            pipeline.pttl(self._pause_key)
            if digest is not None:
                pipeline.exists(self._known_key(digest))
            try:
                return self._merged(outlook, pipeline.execute())
            except UNREACHABLE as exc:
                self._redis.failed(exc)
        return outlook

    async def look_async(self, digest: bytes | None) -> Outlook:
        """The async twin of :meth:`look`."""
        outlook = self.local.look(digest)
        if self._redis.up():
            try:
                pipeline = (await self._async_client()).pipeline(transaction=False)
                pipeline.pttl(self._pause_key)
                if digest is not None:
                    pipeline.exists(self._known_key(digest))
                return self._merged(outlook, await pipeline.execute())
            except UNREACHABLE as exc:
                self._redis.failed(exc)
        return outlook

    def draw(self) -> float | None:
        """See :meth:`~apikeys._upstream.UpstreamGuard.draw`."""
        if self._budget is not None and self._counters.up():
            window = limits.strategies.MovingWindowRateLimiter(self._counters.storage)
            try:
                drawn = window.hit(self._budget, BUDGET_KEY)
                stats = None if drawn else window.get_window_stats(self._budget, BUDGET_KEY)
            except limits.errors.StorageError as exc:
                self._counters.failed(exc)
            else:
                return self._answered(stats)
        return self.local.draw()

    async def draw_async(self) -> float | None:
        """The async twin of :meth:`draw`."""
        if self._budget is not None and self._counters.up():
            storage = await self._counters.async_storage()
            window = limits.aio.strategies.MovingWindowRateLimiter(storage)
            try:
                drawn = await window.hit(self._budget, BUDGET_KEY)
                stats = None if drawn else await window.get_window_stats(self._budget, BUDGET_KEY)
            except limits.errors.StorageError as exc:
                self._counters.failed(exc)
            else:
                return self._answered(stats)
        return self.local.draw()

    def _answered(self, refused: limits.WindowStats | None) -> float | None:
        """``None`` when drawn, else the seconds until the shared window has room
        (``limits`` keeps its windows by the wall clock)."""
        self._counters.succeeded()
        return None if refused is None else max(refused.reset_time - time.time(), 0.001)

    def learn(self, digest: bytes, succeeded: bool) -> None:
        """See :meth:`~apikeys._upstream.UpstreamGuard.learn`."""
        self.local.learn(digest, succeeded)
        if self._redis.up():
            key = self._known_key(digest)
            try:
                if succeeded:
                    self._client.set(key, 1, px=math.ceil(KNOWN_SECRET_TTL * 1000))
                else:
                    self._client.delete(key)
            except UNREACHABLE as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()

    async def learn_async(self, digest: bytes, succeeded: bool) -> None:
        """The async twin of :meth:`learn`."""
        self.local.learn(digest, succeeded)
        if self._redis.up():
            key = self._known_key(digest)
            try:
                client = await self._async_client()
                if succeeded:
                    await client.set(key, 1, px=math.ceil(KNOWN_SECRET_TTL * 1000))
                else:
                    await client.delete(key)
            except UNREACHABLE as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()

    def pause(self, seconds: float) -> None:
        """See :meth:`~apikeys._upstream.UpstreamGuard.pause`."""
        self.local.pause(seconds)
        if seconds > 0 and self._redis.up():
            try:
                self._client.set(self._pause_key, 1, px=math.ceil(seconds * 1000))
            except UNREACHABLE as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()

    async def pause_async(self, seconds: float) -> None:
        """The async twin of :meth:`pause`."""
        self.local.pause(seconds)
        if seconds > 0 and self._redis.up():
            try:
                client = await self._async_client()
                await client.set(self._pause_key, 1, px=math.ceil(seconds * 1000))
            except UNREACHABLE as exc:
                self._redis.failed(exc)
            else:
                self._redis.succeeded()

    async def _async_client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        entry = self._async_clients.get(loop)
        if entry is None:
            # No silent retry: a Redis that does not answer holds a request up once, briefly.
            client = redis.asyncio.Redis.from_url(
                self._url,
                retry=AsyncRetry(NoBackoff(), 0),
                socket_connect_timeout=COUNTER_TIMEOUT,
                socket_timeout=COUNTER_TIMEOUT,
            )
            keeper = closed_with_the_loop(client.connection_pool)
            await keeper.__anext__()
            entry = self._async_clients[loop] = (client, keeper)
        return entry[0]

    def close(self) -> None:
        """Drop the sync connections."""
        self._client.close()

    async def aclose(self) -> None:
        """Close the connections of the running event loop now, not at its shutdown."""
        entry = self._async_clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()
        await self._counters.aclose()


__all__ = ["RedisUpstreamGuard"]
