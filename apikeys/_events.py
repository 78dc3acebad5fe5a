"""Usage monitoring: what happens to keys, as events and as standard log records.

Every manager reports what happens to keys -- created, validated, rejected
(with a reason), revoked, rotated, deleted --, a burst of wrong secrets or
unknown ids against one key id as ``suspicious``, and an expired or revoked
key presented with its right secret as ``retired_key_used`` (an old key still
in someone's hands, not a guess); the Clerk backend reports ``flood`` when it
starts refusing secrets it has never seen succeed, its verification budget spent. Events name the key by its public id, never
by its secret. Bursts are counted per process, or, with ``redis_url``, across
every process sharing the Redis (:class:`~apikeys._redis.RedisBurstDetector`).
Two ways to receive them:

- stdlib :mod:`logging`, on the ``apikeys.events`` logger: ``suspicious`` and
  ``retired_key_used`` at WARNING, ``rejected`` and the lifecycle events at
  INFO, ``validated`` at DEBUG. Each record carries the event as
  ``record.apikeys_event``.
- listeners: any callable taking a :class:`KeyEvent`, registered for the
  whole process with :func:`add_event_listener`.

Listeners run synchronously in the thread (or on the event loop) that is
validating, so keep them quick: hand the event to a queue when the work is
slow. An exception in a listener is logged and swallowed -- a listener can
never break validation. Nothing is built on the validation fast path unless
someone listens or DEBUG logging is on for ``apikeys.events``.

Example:
    >>> import apikeys
    >>> seen = []
    >>> listener = apikeys.add_event_listener(seen.append)
    >>> manager = apikeys.create_key_manager("sqlite:///:memory:")
    >>> new = manager.create_api_key("user_1", "ci")
    >>> [(event.kind, event.key_id == new.id) for event in seen]
    [('created', True)]
    >>> apikeys.remove_event_listener(listener)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from apikeys._errors import (
    APIKeysError,
    BackendUnavailableError,
    ExpiredKeyError,
    InsufficientScopeError,
    InvalidKeyError,
    MissingKeyError,
    RateLimitedError,
    RevokedKeyError,
)
from apikeys._expiry import utcnow
from apikeys._ratelimit import DEFAULT_MAX_TRACKED_KEYS, FailureLimiter

EventKind = Literal[
    "created",
    "validated",
    "rejected",
    "revoked",
    "rotated",
    "deleted",
    "suspicious",
    "retired_key_used",
    "flood",
]
"""What happened to a key; ``flood`` is about no key: a backend that verifies
with a rate-limited service (Clerk) began refusing unknown keys to protect it."""

RejectionReason = Literal[
    "missing", "invalid", "expired", "revoked", "insufficient_scope", "rate_limited", "unavailable"
]
"""Why a validation was refused. ``invalid`` covers malformed keys, unknown ids
and wrong secrets alike; the others are only ever reached with the right secret,
except ``missing`` (no key sent), ``rate_limited`` and ``unavailable``."""

EventListener = Callable[["KeyEvent"], object]
"""A callable that receives every :class:`KeyEvent`."""

DEFAULT_SUSPICIOUS_FAILURES = 10
DEFAULT_SUSPICIOUS_WINDOW = 60.0

logger = logging.getLogger("apikeys.events")

_LEVELS: dict[str, int] = {
    "created": logging.INFO,
    "validated": logging.DEBUG,
    "rejected": logging.INFO,
    "revoked": logging.INFO,
    "rotated": logging.INFO,
    "deleted": logging.INFO,
    "suspicious": logging.WARNING,
    "retired_key_used": logging.WARNING,
    "flood": logging.WARNING,
}

# Rejections that count towards a burst: attempts with a wrong secret or an
# unknown id, the only ones a guesser makes. Expired and revoked keys are
# refused only to callers holding the right secret (retired_key_used), a
# rate-limited attempt is the burst itself, and an unavailable backend is not
# the caller's doing.
_COUNTED_REASONS = frozenset({"invalid"})
_RETIRED_REASONS = frozenset({"expired", "revoked"})


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One thing that happened to an API key. It never holds a secret.

    Attributes:
        kind: What happened.
        key_id: The key's public id; for a rejection, the id the presented key
            claims (the key may not exist), or ``None`` when it has none.
        user_id: The key's owner, when the backend knows it.
        reason: Why a ``rejected`` event was refused; for ``suspicious``, the
            last failure's; for ``retired_key_used``, ``expired`` or ``revoked``.
        source: What reported it: a backend (``sqlalchemy``, ``clerk``) or an
            integration (``fastapi``, ``flask``, ``django``).
        new_key_id: For ``rotated``, the id of the replacement key.
        failures: For ``suspicious``, the failures counted in the burst.
        at: When it happened (UTC).
    """

    kind: EventKind
    key_id: str | None = None
    user_id: str | None = None
    reason: RejectionReason | None = None
    source: str = ""
    new_key_id: str | None = None
    failures: int = 0
    at: datetime = field(default_factory=utcnow)

    def describe(self) -> str:
        """A one-line summary for logs: ``rejected key_id=… reason=invalid``."""
        parts: list[str] = [self.kind]
        for name in ("key_id", "user_id", "reason", "new_key_id", "source"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value}")
        if self.failures:
            parts.append(f"failures={self.failures}")
        return " ".join(parts)


_listeners_lock = threading.Lock()
# Replaced, never mutated, so emit() can iterate without taking the lock.
_listeners: tuple[EventListener, ...] = ()


def add_event_listener(listener: EventListener) -> EventListener:
    """Call ``listener`` with every :class:`KeyEvent` of this process, from now on.

    Returns ``listener``, so this also works as a decorator. Adding the same
    listener twice has no further effect.
    """
    global _listeners
    with _listeners_lock:
        if listener not in _listeners:
            _listeners = (*_listeners, listener)
    return listener


def remove_event_listener(listener: EventListener) -> None:
    """Stop calling ``listener``; unknown listeners are ignored."""
    global _listeners
    with _listeners_lock:
        _listeners = tuple(known for known in _listeners if known != listener)


def is_wanted(kind: EventKind) -> bool:
    """Tell whether an event of ``kind`` would reach anyone (a listener or a log handler)."""
    return bool(_listeners) or logger.isEnabledFor(_LEVELS[kind])


def emit(event: KeyEvent) -> None:
    """Log ``event`` and hand it to every listener; listener errors are logged, not raised."""
    level = _LEVELS[event.kind]
    if logger.isEnabledFor(level):
        logger.log(level, "API key %s", event.describe(), extra={"apikeys_event": event})
    for listener in _listeners:
        try:
            listener(event)
        except Exception:
            logger.exception("apikeys event listener %r failed on a %s event", listener, event.kind)


def rejection_reason(error: BaseException) -> RejectionReason | None:
    """The :data:`RejectionReason` for a validation error, or ``None`` if it is not a refusal."""
    # Subclasses before their parents: ExpiredKeyError is an InvalidKeyError.
    if isinstance(error, ExpiredKeyError):
        return "expired"
    if isinstance(error, RevokedKeyError):
        return "revoked"
    if isinstance(error, InvalidKeyError):
        return "invalid"
    if isinstance(error, InsufficientScopeError):
        return "insufficient_scope"
    if isinstance(error, MissingKeyError):
        return "missing"
    if isinstance(error, RateLimitedError):
        return "rate_limited"
    if isinstance(error, BackendUnavailableError):
        return "unavailable"
    return None


class _OncePerWindow:
    """Say yes for an id at most once per ``window``; remembers at most ``max_tracked`` ids."""

    __slots__ = ("_clock", "_lock", "_reported", "max_tracked", "window")

    def __init__(self, window: float, max_tracked: int, clock: Callable[[], float]) -> None:
        self.window = window
        self.max_tracked = max_tracked
        self._clock = clock
        # id -> when it was last said yes to, oldest first.
        self._reported: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def due(self, key_id: str) -> bool:
        with self._lock:
            now = self._clock()
            last = self._reported.get(key_id)
            if last is not None and now - last < self.window:
                return False
            self._reported.pop(key_id, None)
            self._reported[key_id] = now
            while len(self._reported) > self.max_tracked:
                self._reported.popitem(last=False)
        return True


class BurstDetector:
    """Tell when failures against one key id come in a burst; at most once per window per id.

    Failures are counted in a token bucket per id (see
    :class:`~apikeys._ratelimit.FailureLimiter`): ``threshold`` failures in
    quick succession, or faster than ``threshold`` per ``window`` for long
    enough, make a burst. Memory is bounded by ``max_tracked`` ids.

    Args:
        threshold: Failures that make a burst; ``0`` disables detection.
        window: Seconds over which ``threshold`` failures count as a burst, and
            the least time between two reports about one id.
        max_tracked: Upper bound on ids remembered.
        clock: A monotonic clock, injectable for tests.
    """

    __slots__ = ("_counter", "_reports", "threshold", "window")

    #: Counting never waits: callers on an event loop may call :meth:`record` in place.
    shared = False

    def __init__(
        self,
        threshold: int = DEFAULT_SUSPICIOUS_FAILURES,
        window: float = DEFAULT_SUSPICIOUS_WINDOW,
        *,
        max_tracked: int = DEFAULT_MAX_TRACKED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.window = window
        self._counter = FailureLimiter(threshold, window, max_tracked=max_tracked, clock=clock)
        self._reports = _OncePerWindow(window, max_tracked, clock)

    def record(self, key_id: str) -> int | None:
        """Count a failure against ``key_id``; return the burst size when it should be reported."""
        failures = self._counter.record_failure(key_id)
        if not self._counter.enabled or failures < self.threshold:
            return None
        return failures if self._reports.due(key_id) else None

    async def record_async(self, key_id: str) -> int | None:
        """:meth:`record`, for async callers (nothing here waits)."""
        return self.record(key_id)


class BurstCounter(Protocol):
    """What counts failures towards bursts: a :class:`BurstDetector` in the process,
    or one shared by every process (:class:`~apikeys._redis.RedisBurstDetector`)."""

    @property
    def shared(self) -> bool:
        """Whether counting waits on IO, so async callers must use :meth:`record_async`."""
        ...

    def record(self, key_id: str) -> int | None:
        """Count a failure; return the burst size when this caller should report it."""
        ...

    async def record_async(self, key_id: str) -> int | None:
        """:meth:`record`, for async callers."""
        ...


# Counts running on an event loop, held until done (a loop keeps only weak references).
_counting: set[asyncio.Task[None]] = set()


class EventReporter:
    """What a backend or integration uses to report events, with one burst detector.

    Args:
        source: The reporter's name, copied into every event.
        suspicious_failures: Failures against one id that make a burst (``0``: never).
        suspicious_window: Seconds over which they count (see :class:`BurstDetector`),
            and the least time between two ``retired_key_used`` events of one id.
        max_tracked: Upper bound on ids the detector remembers.
        clock: A monotonic clock, injectable for tests.
        redis_url: Redis shared by every process: failures are counted there, so
            a burst spread over many workers is reported, once per window for
            them all (see :class:`~apikeys._redis.RedisBurstDetector`). On an
            event loop the count runs as a task of its own, so a refusal never
            waits on Redis and ``suspicious`` follows it.
    """

    __slots__ = ("detector", "retired", "source")

    def __init__(
        self,
        source: str,
        *,
        suspicious_failures: int = DEFAULT_SUSPICIOUS_FAILURES,
        suspicious_window: float = DEFAULT_SUSPICIOUS_WINDOW,
        max_tracked: int = DEFAULT_MAX_TRACKED_KEYS,
        clock: Callable[[], float] = time.monotonic,
        redis_url: str | None = None,
    ) -> None:
        self.source = source
        local = BurstDetector(
            suspicious_failures, suspicious_window, max_tracked=max_tracked, clock=clock
        )
        self.detector: BurstCounter = local
        if redis_url is not None and suspicious_failures:
            from apikeys._redis import RedisBurstDetector

            self.detector = RedisBurstDetector(redis_url, local)
        self.retired = _OncePerWindow(suspicious_window, max_tracked, clock)

    def report(
        self,
        kind: EventKind,
        key_id: str | None,
        *,
        user_id: str | None = None,
        new_key_id: str | None = None,
    ) -> None:
        """Report a lifecycle event or a successful validation, if anyone wants it."""
        if is_wanted(kind):
            emit(KeyEvent(kind, key_id, user_id=user_id, source=self.source, new_key_id=new_key_id))

    def rejected(
        self, error: BaseException, *, key_id: str | None = None, user_id: str | None = None
    ) -> None:
        """Report a refused validation; count a wrong secret towards a burst, and
        report an expired or revoked key presented with its right secret as
        ``retired_key_used`` (at most once per window per id).

        Args:
            error: What validation raised; errors that are not refusals are ignored.
            key_id: The id the presented key claims, if the error does not carry it.
            user_id: The owner, when the key was found.
        """
        if key_id is None and isinstance(error, APIKeysError):
            key_id = error.key_id
        if key_id is None and not is_wanted("rejected"):
            return  # nothing to count and nobody to tell: the garbage fast path
        reason = rejection_reason(error)
        if reason is None:
            return
        if is_wanted("rejected"):
            emit(KeyEvent("rejected", key_id, user_id=user_id, reason=reason, source=self.source))
        if key_id is None:
            return
        if reason in _RETIRED_REASONS:
            if is_wanted("retired_key_used") and self.retired.due(key_id):
                emit(
                    KeyEvent(
                        "retired_key_used",
                        key_id,
                        user_id=user_id,
                        reason=reason,
                        source=self.source,
                    )
                )
            return
        if reason not in _COUNTED_REASONS:
            return
        if self.detector.shared:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # a thread: counting may wait, as the validation's own IO does
            else:
                task = loop.create_task(self._count_async(key_id, user_id, reason))
                _counting.add(task)
                task.add_done_callback(_counting.discard)
                return
        self._suspicious(key_id, user_id, reason, self.detector.record(key_id))

    async def _count_async(self, key_id: str, user_id: str | None, reason: RejectionReason) -> None:
        self._suspicious(key_id, user_id, reason, await self.detector.record_async(key_id))

    def _suspicious(
        self, key_id: str, user_id: str | None, reason: RejectionReason, failures: int | None
    ) -> None:
        if failures is not None and is_wanted("suspicious"):
            emit(
                KeyEvent(
                    "suspicious",
                    key_id,
                    user_id=user_id,
                    reason=reason,
                    source=self.source,
                    failures=failures,
                )
            )


__all__ = [
    "BurstCounter",
    "BurstDetector",
    "EventKind",
    "EventListener",
    "EventReporter",
    "KeyEvent",
    "RejectionReason",
    "add_event_listener",
    "emit",
    "is_wanted",
    "rejection_reason",
    "remove_event_listener",
]
