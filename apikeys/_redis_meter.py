"""Rate limits and quotas counted in Redis, exact for every process of a fleet.

:class:`RedisMeter` carries out the plans of :mod:`apikeys._meter` in one round
trip: a short Lua script reads the key's rate-limit and quota counters, and
only if both have room for the whole cost charges both and sets when they
may be forgotten. Redis runs a script without running anything else, so with
any number of workers exactly ``limit`` units pass per window, never one more.

The script is the one piece of hand-written Lua in apikeys. The ``limits``
library, which counts failures (:mod:`apikeys._redis`), does not fit here:

- it moves one counter per call, and two counters moved one after the other
  are not all-or-nothing: a call refused by its quota would still have spent
  its rate limit, or the reverse;
- it answers a hit with yes or no, and what is left and when the window
  resets (the ``RateLimit`` header fields) would cost a second round trip;
- it reads the wall clock itself, where apikeys' clock is injected, so that
  tests move time instead of waiting for it.

The script takes no time from Redis: the caller names the window (from its own
clock) and says how long the counter must live, in milliseconds from now, so
a caller's clock and Redis's need not agree.

While Redis cannot be reached (:class:`~apikeys._redis.RedisBackoff` decides
when to try again), a rate limit counts in the process (``local``, a
:class:`~apikeys._meter.MemoryMeter`), as failure limits do: each worker then
admits up to the limit itself. A quota is never counted in the process: a
worker cannot know what the others spent, and quotas are money, so a call
with a quota is refused with :class:`~apikeys.BackendUnavailableError` (503)
until Redis is back. A restarted Redis starts its counters from zero.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

from apikeys._errors import BackendUnavailableError, MissingDependencyError
from apikeys._expiry import WallClock, check_clock, utcnow
from apikeys._meter import (
    UNLIMITED,
    Allowance,
    KeyLimits,
    MemoryMeter,
    SpendPlan,
    plan_spend,
    settle,
)

try:
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff

    from apikeys._redis import (
        COUNTER_TIMEOUT,
        RETRY_REDIS_AFTER,
        RedisBackoff,
        closed_with_the_loop,
        connect,
    )
except ImportError as exc:
    raise MissingDependencyError(exc.name or "redis", "redis") from exc

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript, Script

SPEND_SCRIPT = """
-- Charge ARGV[1] units to every counter in KEYS, or to none of them.
-- ARGV[1 + i]: counter i's limit.
-- ARGV[1 + #KEYS + i]: milliseconds counter i must live from now; 0: for ever.
-- Returns {1 if charged else 0, then each counter's count}: after charging,
-- or as it stands when refused (a refused call charges nothing).
local cost = tonumber(ARGV[1])
local counts = {}
local room = 1
for i, key in ipairs(KEYS) do
  counts[i] = tonumber(redis.call('GET', key) or '0')
  if counts[i] + cost > tonumber(ARGV[1 + i]) then room = 0 end
end
if room == 1 then
  for i, key in ipairs(KEYS) do
    counts[i] = redis.call('INCRBY', key, cost)
    local lifetime = tonumber(ARGV[1 + #KEYS + i])
    if lifetime > 0 then redis.call('PEXPIRE', key, lifetime) end
  end
end
table.insert(counts, 1, room)
return counts
"""
"""The Lua script of one spend: counts compared, then charged, in one atomic step."""

UNREACHABLE = (redis.RedisError, OSError)
"""What a Redis that cannot be reached, or cannot answer in time, raises."""


def script_arguments(plan: SpendPlan) -> tuple[list[str], list[int]]:
    """The ``KEYS`` and ``ARGV`` of :data:`SPEND_SCRIPT` for ``plan``."""
    names = [counter.name for counter in plan.counters]
    limits = [counter.limit for counter in plan.counters]
    lifetimes = [plan.milliseconds_to_expiry(counter) or 0 for counter in plan.counters]
    return names, [plan.cost, *limits, *lifetimes]


def read_answer(plan: SpendPlan, answer: Any) -> Allowance:
    """The script's answer as an allowance, or the refusal it means."""
    spent, *counts = (int(value) for value in answer)
    return settle(plan, bool(spent), counts)


class RedisMeter:
    """A :class:`~apikeys._meter.Meter` counting in Redis: one count for every process.

    Sync callers use :meth:`spend`, async callers :meth:`spend_async` (a
    connection pool per event loop, closed with the loop). Each call is one
    round trip; a key without limits makes none.

    Args:
        url: The Redis server.
        clock: The wall clock windows are read from, injectable for tests.
        local: Counts rate limits while Redis cannot be reached; by default a
            :class:`~apikeys._meter.MemoryMeter` on ``clock``.
        outage_clock: A monotonic clock for the time Redis is left alone after
            a failure, injectable for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: WallClock = utcnow,
        local: MemoryMeter | None = None,
        outage_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = check_clock(clock)
        self.local = local if local is not None else MemoryMeter(clock=clock)
        self._url = url
        self._client = connect(url, timeout=COUNTER_TIMEOUT)
        self._script: Script = self._client.register_script(SPEND_SCRIPT)
        self._redis = RedisBackoff(
            "usage limits",
            meanwhile="counting rate limits in this process and refusing keys with a quota",
            clock=outage_clock,
        )
        # redis.asyncio connections belong to one event loop: a client per loop.
        self._async_scripts: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[AsyncScript, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    def spend(self, meter_id: str, limits: KeyLimits, cost: int = 1) -> Allowance:
        """Charge ``cost`` to every limit of ``meter_id``, all or nothing, in every process.

        Returns:
            What is left of each limit.

        Raises:
            QuotaExceededError: The quota has no room for ``cost``; nothing is charged.
            RateLimitedError: The rate limit's window has no room; nothing is charged.
            BackendUnavailableError: Redis cannot be reached and the key has a quota.
            InvalidInputError: ``cost`` is not from 1 to 10**12.
        """
        plan = plan_spend(meter_id, limits, cost, self._clock())
        if plan.counters and self._redis.up():
            try:
                answer = self._script(*script_arguments(plan))
            except UNREACHABLE as exc:
                self._redis.failed(exc)
            else:
                return self._answered(plan, answer)
        return self._without_redis(plan)

    async def spend_async(self, meter_id: str, limits: KeyLimits, cost: int = 1) -> Allowance:
        """The async twin of :meth:`spend`."""
        plan = plan_spend(meter_id, limits, cost, self._clock())
        if plan.counters and self._redis.up():
            try:
                script = await self._async_script()
                answer = await script(*script_arguments(plan))
            except UNREACHABLE as exc:
                self._redis.failed(exc)
            else:
                return self._answered(plan, answer)
        return self._without_redis(plan)

    def _answered(self, plan: SpendPlan, answer: Any) -> Allowance:
        self._redis.succeeded()
        return read_answer(plan, answer)

    def _without_redis(self, plan: SpendPlan) -> Allowance:
        if not plan.counters:
            return UNLIMITED  # a key without limits never asks Redis
        if any(counter.kind == "quota" for counter in plan.counters):
            raise BackendUnavailableError(
                "the quota of this key cannot be counted: Redis cannot be reached",
                retry_after=RETRY_REDIS_AFTER,
            )
        return self.local.count(plan)

    async def _async_script(self) -> AsyncScript:
        loop = asyncio.get_running_loop()
        entry = self._async_scripts.get(loop)
        if entry is None:
            # No silent retry: a script that ran but whose answer was lost would charge twice.
            client = redis.asyncio.Redis.from_url(
                self._url,
                retry=AsyncRetry(NoBackoff(), 0),
                socket_connect_timeout=COUNTER_TIMEOUT,
                socket_timeout=COUNTER_TIMEOUT,
            )
            keeper = closed_with_the_loop(client.connection_pool)
            await keeper.__anext__()
            entry = self._async_scripts[loop] = (client.register_script(SPEND_SCRIPT), keeper)
        return entry[0]

    def close(self) -> None:
        """Drop the sync connections."""
        self._client.close()

    async def aclose(self) -> None:
        """Close the connections of the running event loop now, not at its shutdown."""
        entry = self._async_scripts.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()


__all__ = ["SPEND_SCRIPT", "UNREACHABLE", "RedisMeter", "read_answer", "script_arguments"]
