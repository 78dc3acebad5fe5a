"""Abuse controls, free of IO: a limiter of failed attempts and a cap on concurrent work.

:class:`FailureLimiter` is a token bucket per key -- a client address in a
web integration, never a key id, which is public: each failed attempt takes a
token, a key with no token left is refused with
:class:`~apikeys.RateLimitedError` until one grows back. It remembers at most
``max_tracked`` keys, so a flood of distinct keys cannot grow it without
bound. The burst detector of :mod:`apikeys._events` counts failures per key
id with it, to report them, never to refuse anyone.

:class:`ConcurrencyCap` bounds how many threads or tasks do expensive work
(argon2 hashing) at once, so a flood of wrong secrets queues behind the cap
instead of taking every CPU from valid requests; turns are given first come,
first served, so a valid request in the queue is never overtaken by the flood.
Tasks wait on futures of their own event loop and never block it.

Example:
    >>> limiter = FailureLimiter(max_failures=3, window=60.0)
    >>> for _ in range(3):
    ...     limiter.check("203.0.113.7")
    ...     _ = limiter.record_failure("203.0.113.7")
    >>> limiter.check("203.0.113.7")
    Traceback (most recent call last):
    ...
    apikeys._errors.RateLimitedError: Too many requests
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol

from apikeys._errors import (
    BackendUnavailableError,
    ExpiredKeyError,
    InvalidKeyError,
    RateLimitedError,
    RevokedKeyError,
)

DEFAULT_MAX_FAILURES = 100
DEFAULT_FAILURE_WINDOW = 60.0
DEFAULT_MAX_TRACKED_KEYS = 10_000


def default_hash_concurrency() -> int:
    """One argon2 hash per CPU: more only makes each one slower."""
    return os.cpu_count() or 1


class FailureLimiter:
    """Allow ``max_failures`` failed attempts per key in a burst, then as many per ``window``.

    A key here is whom the failures are held against: a client address, say.
    Refusing by key id would let anyone who knows one (it is public) lock
    its holder out.

    A token bucket (kept as the "theoretical arrival time" of the generic cell
    rate algorithm, one float per key): a key starts with ``max_failures``
    tokens, each failure takes one, and one grows back every
    ``window / max_failures`` seconds; an empty bucket is full again
    ``window`` seconds after its last failure. A key with no token is refused,
    so in any span of ``t`` seconds it gets at most
    ``max_failures * (1 + t / window)`` failures. Only failures count;
    successes neither take nor give tokens.

    Args:
        max_failures: Tokens per key; ``0`` disables the limiter.
        window: Seconds for a key's bucket to refill completely.
        max_tracked: Upper bound on keys remembered; past it the key that failed
            least recently is forgotten (the limit gets more lenient, never
            stricter, and memory stays bounded).
        clock: A monotonic clock, injectable for tests.
    """

    __slots__ = ("_clock", "_interval", "_lock", "_tat", "max_failures", "max_tracked", "window")

    def __init__(
        self,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window: float = DEFAULT_FAILURE_WINDOW,
        *,
        max_tracked: int = DEFAULT_MAX_TRACKED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 0 or not window > 0 or max_tracked < 1 or math.isinf(window):
            raise ValueError("max_failures must be >= 0, window > 0 and max_tracked >= 1")
        self.max_failures = max_failures
        self.window = float(window)
        self.max_tracked = max_tracked
        self._interval = self.window / max_failures if max_failures else 0.0
        self._clock = clock
        # key -> the time at which its bucket is full again; past keys are full.
        self._tat: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether any key can be refused at all."""
        return self.max_failures > 0

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or ``None`` if it may try now."""
        if not self.enabled:
            return None
        with self._lock:
            return self._retry_after(key)

    def _retry_after(self, key: str) -> float | None:
        tat = self._tat.get(key)
        if tat is None:
            return None
        wait = tat - self._clock() - (self.window - self._interval)
        # A millionth of an interval of slack: ``tat`` is a sum of ``interval``s,
        # and float rounding must not cost a fresh key the last token of its burst.
        return wait if wait > self._interval * 1e-6 else None

    def check(self, key: str) -> None:
        """Refuse ``key`` if it has no token left.

        Raises:
            RateLimitedError: With ``retry_after`` in seconds. It carries no key
                id: the caller sent the key and learns nothing new from it.
        """
        _refuse_if_waiting(self.retry_after(key))

    def record_failure(self, key: str) -> int:
        """Take a token from ``key``; return how many failures its bucket now holds."""
        if not self.enabled:
            return 0
        with self._lock:
            return self._record(key)

    def _record(self, key: str) -> int:
        now = self._clock()
        tat = self._tat.pop(key, None)  # re-inserted below: most recent last
        if tat is None:
            self._make_room(now)
            tat = now
        # Capped at a full window: a key is never locked out for longer than
        # ``window``, however many attempts raced past the check.
        tat = min(max(tat, now) + self._interval, now + self.window)
        self._tat[key] = tat
        return math.ceil((tat - now) / self._interval - 1e-9)

    def take(self, key: str) -> None:
        """Take a token from ``key`` if it has one left, at once (check and count in one step).

        Raises:
            RateLimitedError: ``key`` has no token left; nothing is counted.
        """
        if not self.enabled:
            return
        with self._lock:
            _refuse_if_waiting(self._retry_after(key))
            self._record(key)

    # Async twins, so that callers treat this limiter and a shared one alike: nothing here waits.
    async def check_async(self, key: str) -> None:
        """:meth:`check`, for async callers."""
        self.check(key)

    async def record_failure_async(self, key: str) -> None:
        """:meth:`record_failure`, for async callers."""
        self.record_failure(key)

    async def take_async(self, key: str) -> None:
        """:meth:`take`, for async callers."""
        self.take(key)

    @contextmanager
    def attempt(self, key: str) -> Iterator[None]:
        """Guard one validation on behalf of ``key`` (a client address, say).

        Refuses at once if ``key`` has no token left, and takes a token if the
        block raises :class:`~apikeys.InvalidKeyError` -- a malformed, unknown
        or wrong key, not an expired or revoked one (their holder had the
        right secret). The block's exception is re-raised either way. Works
        around an ``await`` too: the guard itself never waits::

            with client_limiter.attempt(client_address):
                verified = await manager.validate_api_key(secret)

        Raises:
            RateLimitedError: ``key`` has no token left; the block did not run.
        """
        self.check(key)
        try:
            yield
        except InvalidKeyError as exc:
            if counts_as_failure(exc):
                self.record_failure(key)
            raise

    def reset(self, key: str) -> None:
        """Forget ``key``'s failures."""
        with self._lock:
            self._tat.pop(key, None)

    def __len__(self) -> int:
        return len(self._tat)

    def _make_room(self, now: float) -> None:
        # Oldest first: refilled buckets are dropped, then, if the table is
        # still full, the key that failed least recently.
        while self._tat:
            oldest, tat = next(iter(self._tat.items()))
            if tat > now and len(self._tat) < self.max_tracked:
                return
            del self._tat[oldest]


def counts_as_failure(error: BaseException) -> bool:
    """Whether ``error`` is a failed attempt: a malformed, unknown or wrong key.

    An expired or revoked key is not: its holder had the right secret.
    """
    return isinstance(error, InvalidKeyError) and not isinstance(
        error, ExpiredKeyError | RevokedKeyError
    )


def _refuse_if_waiting(wait: float | None) -> None:
    if wait is not None:
        # Rounded up to the millisecond, so a retry at retry_after succeeds.
        raise RateLimitedError(retry_after=math.ceil(wait * 1000) / 1000)


class FailureCounter(Protocol):
    """What counts failures: a :class:`FailureLimiter` in the process, or one shared by many."""

    @property
    def enabled(self) -> bool:
        """Whether any key can be refused at all."""
        ...

    def check(self, key: str) -> None:
        """Refuse ``key`` (:class:`~apikeys.RateLimitedError`) if it is over its limit."""
        ...

    def record_failure(self, key: str) -> object:
        """Count one failure against ``key``."""
        ...

    def take(self, key: str) -> None:
        """Check and count one in a single step; refused attempts count nothing."""
        ...

    async def check_async(self, key: str) -> None:
        """:meth:`check`, for async callers."""
        ...

    async def record_failure_async(self, key: str) -> None:
        """:meth:`record_failure`, for async callers."""
        ...

    async def take_async(self, key: str) -> None:
        """:meth:`take`, for async callers."""
        ...


class _FairSlots:
    """A counting semaphore for threads that serves waiters first come, first served.

    :class:`threading.Semaphore` lets a newcomer take a slot released while
    others already wait, so under a flood a request can lose its turn again and
    again until it times out. Here a released slot is handed to the longest
    waiter directly, and nobody takes a free slot while someone waits.
    """

    __slots__ = ("_free", "_lock", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[threading.Event] = deque()
        self._lock = threading.Lock()

    def acquire(self, timeout: float) -> bool:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(timeout):
            return True
        with self._lock:
            if turn.is_set():  # handed a slot as the wait ran out: keep it
                return True
            self._waiters.remove(turn)
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()  # the slot passes on, never freed
            else:
                self._free += 1


class _FairAsyncSlots:
    """:class:`_FairSlots` for the tasks of one event loop: waiting never blocks the loop."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    # The twin of _FairSlots.acquire(timeout): a timeout is an answer (False), not an error.
    async def acquire(self, timeout: float) -> bool:  # noqa: ASYNC109
        if self._free and not self._waiters:
            self._free -= 1
            return True
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), timeout)
        except TimeoutError:
            pass
        except BaseException:  # cancelled: give back a slot handed over meanwhile
            self._leave(turn)
            raise
        if turn.done():
            return True
        self._leave(turn)
        return False

    def _leave(self, turn: asyncio.Future[None]) -> None:
        if turn.done():
            self.release()
        else:
            self._waiters.remove(turn)
            turn.cancel()

    def release(self) -> None:
        # Every call runs on the loop's thread: no lock is needed.
        if self._waiters:
            self._waiters.popleft().set_result(None)
        else:
            self._free += 1


class ConcurrencyCap:
    """Let at most ``limit`` threads, or tasks per event loop, in at once, first come first served.

    Args:
        limit: How many may hold the cap at once; ``None`` means one per CPU.
        timeout: Longest wait for a turn before giving up.

    Waiters get their turns in the order they arrived, so a valid request
    queued behind a flood is served after the requests ahead of it, never
    overtaken by those that come later. Waiting longer than ``timeout`` raises
    :class:`~apikeys.BackendUnavailableError` (503 with ``retry_after``): the
    server is saturated and the request is refused, never let through.
    """

    __slots__ = ("__weakref__", "_async_slots", "_lock", "_thread_slots", "limit", "timeout")

    def __init__(self, limit: int | None = None, *, timeout: float = 5.0) -> None:
        limit = default_hash_concurrency() if limit is None else limit
        if limit < 1 or not timeout > 0:
            raise ValueError("limit must be >= 1 and timeout > 0")
        self.limit = limit
        self.timeout = timeout
        self._thread_slots = _FairSlots(limit)
        # Slots per event loop: futures belong to one loop.
        self._async_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _FairAsyncSlots] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold a turn for the duration of the ``with`` block (threads)."""
        if not self._thread_slots.acquire(self.timeout):
            raise _saturated()
        try:
            yield
        finally:
            self._thread_slots.release()

    @asynccontextmanager
    async def hold_async(self) -> AsyncIterator[None]:
        """Hold a turn for the duration of the ``async with`` block (tasks)."""
        slots = self._slots_of(asyncio.get_running_loop())
        if not await slots.acquire(self.timeout):
            raise _saturated()
        try:
            yield
        finally:
            slots.release()

    def _slots_of(self, loop: asyncio.AbstractEventLoop) -> _FairAsyncSlots:
        with self._lock:
            slots = self._async_slots.get(loop)
            if slots is None:
                slots = self._async_slots[loop] = _FairAsyncSlots(self.limit)
            return slots


def _saturated() -> BackendUnavailableError:
    return BackendUnavailableError("too many API key checks in progress", retry_after=1)


__all__ = [
    "DEFAULT_FAILURE_WINDOW",
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_MAX_TRACKED_KEYS",
    "ConcurrencyCap",
    "FailureCounter",
    "FailureLimiter",
    "counts_as_failure",
    "default_hash_concurrency",
]
