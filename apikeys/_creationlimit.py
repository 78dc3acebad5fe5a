"""How many keys one owner may create through ``POST /api-keys``, free of IO.

A key that may manage its owner's keys could otherwise mint thousands a
second: each one a row, an argon2 hash, and a credential to track down.
:class:`CreationLimiter` allows ``max_creations`` creations per owner in a
burst, then one more every ``window / max_creations`` seconds; past that,
:class:`~apikeys.RateLimitedError` (429 with ``Retry-After``). It is the
token bucket of :class:`~apikeys._ratelimit.FailureLimiter`, with the check
and the take made one step (:meth:`~apikeys._ratelimit.FailureLimiter.take`),
so concurrent requests cannot all slip past the check before any of them counts.

Example:
    >>> now = [0.0]
    >>> limiter = CreationLimiter(max_creations=2, window=60.0, clock=lambda: now[0])
    >>> limiter.take("user_1"); limiter.take("user_1")
    >>> limiter.take("user_1")
    Traceback (most recent call last):
    ...
    apikeys._errors.RateLimitedError: Too many API keys created for this user; retry later
    >>> now[0] = 30.0  # one creation grows back every 60 / 2 seconds
    >>> limiter.take("user_1")
"""

from __future__ import annotations

import time
from collections.abc import Callable

from apikeys._errors import RateLimitedError
from apikeys._ratelimit import DEFAULT_MAX_TRACKED_KEYS, FailureCounter, FailureLimiter

DEFAULT_MAX_KEY_CREATIONS = 20
DEFAULT_KEY_CREATION_WINDOW = 600.0

_MESSAGE = "Too many API keys created for this user; retry later"


class CreationLimiter:
    """Allow ``max_creations`` key creations per owner in a burst, then as many per ``window``.

    Counted in this process, or, with ``redis_url``, in Redis for every
    process at once (see :class:`apikeys._redis.RedisFailureLimiter`: while
    Redis is down, each process counts alone). ``0`` disables the limit.

    Args:
        max_creations: Creations per owner in a burst; ``0`` disables the limiter.
        window: Seconds for an owner's allowance to grow back completely.
        max_tracked: Owners remembered at most; past it the one that created
            least recently is forgotten (the limit gets more lenient, never
            stricter, and memory stays bounded).
        clock: A monotonic clock. Tests may replace :attr:`clock` later.
        redis_url: Count in this Redis, shared by every process.
    """

    def __init__(
        self,
        max_creations: int = DEFAULT_MAX_KEY_CREATIONS,
        window: float = DEFAULT_KEY_CREATION_WINDOW,
        *,
        max_tracked: int = DEFAULT_MAX_TRACKED_KEYS,
        clock: Callable[[], float] = time.monotonic,
        redis_url: str | None = None,
    ) -> None:
        self.clock = clock
        # The bucket reads the clock through this object, so replacing it takes effect.
        self._bucket = FailureLimiter(
            max_creations, window, max_tracked=max_tracked, clock=lambda: self.clock()
        )
        self._counter: FailureCounter = self._bucket
        if redis_url is not None:
            from apikeys._redis import RedisFailureLimiter

            self._counter = RedisFailureLimiter(redis_url, "key-creations", self._bucket)

    @property
    def max_creations(self) -> int:
        """Creations per owner in a burst (``0``: no limit)."""
        return self._bucket.max_failures

    @property
    def window(self) -> float:
        """Seconds for an owner's allowance to grow back completely."""
        return self._bucket.window

    def take(self, owner: str) -> None:
        """Count one creation for ``owner``, or refuse it.

        Raises:
            RateLimitedError: ``owner`` has no creation left; ``retry_after``
                says when one grows back. Nothing is counted.
        """
        try:
            self._counter.take(owner)
        except RateLimitedError as exc:
            raise RateLimitedError(_MESSAGE, retry_after=exc.retry_after) from None

    async def take_async(self, owner: str) -> None:
        """The async twin of :meth:`take`."""
        try:
            await self._counter.take_async(owner)
        except RateLimitedError as exc:
            raise RateLimitedError(_MESSAGE, retry_after=exc.retry_after) from None


__all__ = ["DEFAULT_KEY_CREATION_WINDOW", "DEFAULT_MAX_KEY_CREATIONS", "CreationLimiter"]
