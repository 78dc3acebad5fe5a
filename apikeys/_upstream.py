"""Protecting a rate-limited key store that verifies each secret remotely (Clerk).

Every secret sent to such a store for verification is one call on a rate limit
the whole application shares with it (and, past a free tier, a billed one), so
a client sending random well-shaped keys could spend it all. A backend keeps
three things to prevent that:

- **secrets seen succeed recently** (:class:`KnownSecrets`): digests, never
  secrets, of those that verified in the last :data:`KNOWN_SECRET_TTL` seconds,
  however long ago their cache entry expired. Their verifications are never
  held back;
- **a budget for the others**: at most ``limit`` verifications in any
  ``window`` seconds, as Clerk counts its own limit (a moving window:
  :class:`MovingWindow` in the process, the ``limits`` library's in Redis).
  Past it, such a secret is refused
  with :class:`~apikeys.VerificationBudgetSpentError` (503 with ``Retry-After``),
  and the first refusal after a quiet window is reported as a ``flood`` event
  (:class:`FloodWatch`);
- **a pause**: once the store answers 429 with ``Retry-After``, no call reaches
  it until that has passed; calls meanwhile fail at once (503).

The backend's IO-free flows yield the requests below (:class:`Look`,
:class:`Draw`, :class:`Learn`, :class:`Pause`); its managers perform them on an
:class:`UpstreamGuard`: :class:`MemoryUpstreamGuard` for one process, or
:class:`~apikeys._redis_upstream.RedisUpstreamGuard` for every process sharing
a Redis (falling back to the process's own state while Redis is down).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from apikeys._errors import InvalidInputError
from apikeys._keylimits import RateLimit

DEFAULT_VERIFICATION_BUDGET = "20/10s"
"""Verifications of secrets not seen succeed recently, per window: a fifth of the
100 per 10 s of a Clerk development instance."""

KNOWN_SECRET_TTL = 86_400.0
"""Seconds a secret that verified stays known: far beyond any cache's lifetime, so a
key used daily never meets the budget."""

BUDGET_KEY = "unknown-secrets"
"""The one bucket the budget counts in: it is the deployment's, not a client's."""


def parse_verification_budget(value: object) -> RateLimit | None:
    """Read a verification budget: a :class:`~apikeys.RateLimit`, its short form
    (``"20/10s"``, ``"1000/10s"``), or ``None``, ``0`` or ``"0"`` for none.

    Raises:
        ValueError: Anything else.
    """
    if value is None or (isinstance(value, int | str) and str(value).strip() == "0"):
        return None
    if isinstance(value, RateLimit):
        return value
    if isinstance(value, str):
        try:
            return RateLimit.parse(value.strip())
        except InvalidInputError:
            pass
    raise ValueError(
        "verification_budget must be verifications per window, such as 20/10s, or 0 for none"
    )


@dataclass(frozen=True, slots=True)
class Outlook:
    """What a guard says before a call: how long the pause has left (``0``: none),
    and whether the secret asked about was seen succeed recently."""

    paused_for: float = 0.0
    known: bool = False


class UpstreamGuard(Protocol):
    """The pause, the known secrets and the budget, for sync and async callers."""

    def look(self, digest: bytes | None) -> Outlook:
        """The pause left, and whether ``digest`` is of a secret seen succeed recently."""
        ...

    async def look_async(self, digest: bytes | None) -> Outlook:
        """:meth:`look`, for async callers."""
        ...

    def draw(self) -> float | None:
        """Take one verification from the budget: ``None`` if taken, else the
        seconds until it has room again (nothing taken)."""
        ...

    async def draw_async(self) -> float | None:
        """:meth:`draw`, for async callers."""
        ...

    def learn(self, digest: bytes, succeeded: bool) -> None:
        """Remember that ``digest``'s secret verified, or forget it after a refusal."""
        ...

    async def learn_async(self, digest: bytes, succeeded: bool) -> None:
        """:meth:`learn`, for async callers."""
        ...

    def pause(self, seconds: float) -> None:
        """Let no call through for ``seconds``."""
        ...

    async def pause_async(self, seconds: float) -> None:
        """:meth:`pause`, for async callers."""
        ...

    def close(self) -> None:
        """Drop sync connections."""
        ...

    async def aclose(self) -> None:
        """Drop the running event loop's connections."""
        ...


class KnownSecrets:
    """Digests of secrets that verified, each for ``ttl`` seconds; at most ``max_entries``,
    the least recently verified forgotten first. Only successes enter it, so a flood of
    strangers can never push a known secret out."""

    def __init__(
        self,
        max_entries: int,
        *,
        ttl: float = KNOWN_SECRET_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._until: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def knows(self, digest: bytes) -> bool:
        """Whether ``digest``'s secret verified in the last ``ttl`` seconds."""
        with self._lock:
            until = self._until.get(digest)
            if until is None:
                return False
            if until > self._clock():
                return True
            del self._until[digest]
            return False

    def learn(self, digest: bytes) -> None:
        """Remember that ``digest``'s secret verified just now."""
        with self._lock:
            self._until[digest] = self._clock() + self.ttl
            self._until.move_to_end(digest)
            while len(self._until) > self.max_entries:
                self._until.popitem(last=False)

    def forget(self, digest: bytes) -> None:
        """Forget ``digest``: its secret was refused."""
        with self._lock:
            self._until.pop(digest, None)


class MovingWindow:
    """At most ``limit`` takes in any ``window`` seconds: it remembers when the last
    ``limit`` were taken, and the oldest must be ``window`` old before another is."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._taken: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self) -> float | None:
        """Take one: ``None`` if taken, else the seconds until one may be (nothing taken)."""
        with self._lock:
            now = self._clock()
            while self._taken and self._taken[0] <= now - self.window:
                self._taken.popleft()
            if len(self._taken) >= self.limit:
                return self._taken[0] + self.window - now
            self._taken.append(now)
            return None


class FloodWatch:
    """Tell which refusal starts a flood: the first after ``window`` seconds without one."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def refused(self) -> bool:
        """Count a refusal; return whether it starts a flood."""
        with self._lock:
            now = self._clock()
            starts = self._last is None or now - self._last >= self.window
            self._last = now
            return starts


class MemoryUpstreamGuard:
    """An :class:`UpstreamGuard` of one process; nothing here waits.

    Args:
        budget: Verifications of unknown secrets per window; ``None``: no budget.
        max_known: Known secrets remembered at most.
        clock: A clock in seconds, injectable for tests.
    """

    def __init__(
        self,
        budget: RateLimit | None,
        *,
        max_known: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.known = KnownSecrets(max_known, clock=clock)
        self.window: MovingWindow | None = None
        if budget is not None:
            self.window = MovingWindow(budget.limit, budget.window.total_seconds(), clock)
        self._clock = clock
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def look(self, digest: bytes | None) -> Outlook:
        """See :meth:`UpstreamGuard.look`."""
        paused_for = max(self._paused_until - self._clock(), 0.0)
        return Outlook(paused_for, digest is not None and self.known.knows(digest))

    def draw(self) -> float | None:
        """See :meth:`UpstreamGuard.draw`."""
        return None if self.window is None else self.window.take()

    def learn(self, digest: bytes, succeeded: bool) -> None:
        """See :meth:`UpstreamGuard.learn`."""
        if succeeded:
            self.known.learn(digest)
        else:
            self.known.forget(digest)

    def pause(self, seconds: float) -> None:
        """See :meth:`UpstreamGuard.pause`; a longer pause already on is kept."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def look_async(self, digest: bytes | None) -> Outlook:
        """:meth:`look`, for async callers."""
        return self.look(digest)

    async def draw_async(self) -> float | None:
        """:meth:`draw`, for async callers."""
        return self.draw()

    async def learn_async(self, digest: bytes, succeeded: bool) -> None:
        """:meth:`learn`, for async callers."""
        self.learn(digest, succeeded)

    async def pause_async(self, seconds: float) -> None:
        """:meth:`pause`, for async callers."""
        self.pause(seconds)

    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""


def guard_for(
    redis_url: str | None,
    budget: RateLimit | None,
    *,
    namespace: str,
    max_known: int,
    clock: Callable[[], float] = time.monotonic,
) -> UpstreamGuard:
    """The guard of a manager: in Redis, shared by every process, when ``redis_url``
    is set (keys under ``namespace``); else in this process."""
    local = MemoryUpstreamGuard(budget, max_known=max_known, clock=clock)
    if redis_url is None:
        return local
    from apikeys._redis_upstream import RedisUpstreamGuard

    return RedisUpstreamGuard(redis_url, local, namespace=namespace)


# --- IO requests yielded by the flows ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Look:
    """Ask for the pause left and whether ``digest`` is known; the result is an :class:`Outlook`."""

    digest: bytes | None = field(default=None, repr=False)

    def perform(self, guard: UpstreamGuard) -> Outlook:
        return guard.look(self.digest)

    async def perform_async(self, guard: UpstreamGuard) -> Outlook:
        return await guard.look_async(self.digest)


@dataclass(frozen=True, slots=True)
class Draw:
    """Take one verification from the budget; the result is ``None`` or the seconds to wait."""

    def perform(self, guard: UpstreamGuard) -> float | None:
        return guard.draw()

    async def perform_async(self, guard: UpstreamGuard) -> float | None:
        return await guard.draw_async()


@dataclass(frozen=True, slots=True)
class Learn:
    """Remember (``succeeded``) or forget a secret's digest; the result is ``None``."""

    digest: bytes = field(repr=False)
    succeeded: bool

    def perform(self, guard: UpstreamGuard) -> None:
        guard.learn(self.digest, self.succeeded)

    async def perform_async(self, guard: UpstreamGuard) -> None:
        await guard.learn_async(self.digest, self.succeeded)


@dataclass(frozen=True, slots=True)
class Pause:
    """Let no call through for ``seconds``; the result is ``None``."""

    seconds: float

    def perform(self, guard: UpstreamGuard) -> None:
        guard.pause(self.seconds)

    async def perform_async(self, guard: UpstreamGuard) -> None:
        await guard.pause_async(self.seconds)


GuardRequest = Look | Draw | Learn | Pause
"""A request a flow makes of its manager's :class:`UpstreamGuard`."""


__all__ = [
    "BUDGET_KEY",
    "DEFAULT_VERIFICATION_BUDGET",
    "KNOWN_SECRET_TTL",
    "Draw",
    "FloodWatch",
    "GuardRequest",
    "KnownSecrets",
    "Learn",
    "Look",
    "MemoryUpstreamGuard",
    "MovingWindow",
    "Outlook",
    "Pause",
    "UpstreamGuard",
    "guard_for",
    "parse_verification_budget",
]
