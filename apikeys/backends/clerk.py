"""The Clerk backend: keys live in your Clerk instance, managed through Clerk's Backend API.

::

    from apikeys.backends.clerk import ClerkKeyManager

    manager = ClerkKeyManager("sk_live_…")  # or create_key_manager("clerk://")
    new = manager.create_api_key("user_2xhFjEI5X2qWRvtV13BzSj8H6Dk", "CI", ["read:data"])
    manager.validate_api_key(new.secret)

The logic lives once, IO-free, in a private base;
:class:`ClerkKeyManager` (``httpx.Client``) and :class:`AsyncClerkKeyManager`
(``httpx.AsyncClient``) only send its requests and sleep its backoffs.
Concurrent validations of the same uncached key share one call to Clerk.
See ``docs/backends/clerk.md`` for the mapping, caching and failure rules.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from apikeys._config import Settings
from apikeys._errors import BackendUnavailableError, MissingDependencyError
from apikeys._flow import run_async, run_sync
from apikeys._models import VerifiedKey
from apikeys._upstream import GuardRequest
from apikeys.backends._clerk import ClerkBase, ClerkOp, SharedVerify, Sleep
from apikeys.backends._shells import Announce, AsyncShell, Spend, SyncShell

try:
    import httpx
except ImportError as exc:
    raise MissingDependencyError("httpx", "clerk") from exc

if TYPE_CHECKING:
    from typing import Self

_POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)


class _Pending:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: VerifiedKey | None = None
        self.error: BaseException | None = None


class _ThreadSingleFlight:
    """Threads asking for the same digest at once share the first one's call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[bytes, _Pending] = {}

    def run(self, digest: bytes, call: Callable[[], VerifiedKey]) -> VerifiedKey:
        with self._lock:
            pending = self._calls.get(digest)
            leader = pending is None
            if pending is None:
                pending = self._calls[digest] = _Pending()
        if not leader:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            assert pending.result is not None
            return pending.result
        try:
            pending.result = call()
            return pending.result
        except Exception as exc:
            pending.error = exc
            raise
        except BaseException:
            pending.error = BackendUnavailableError("verification was interrupted")
            raise
        finally:
            with self._lock:
                del self._calls[digest]
            pending.done.set()


class ClerkKeyManager(SyncShell, ClerkBase):
    """Synchronous manager over Clerk's Backend API; safe to share between threads.

    Concurrent validations of one uncached secret share one call to Clerk.

    Args:
        secret_key: The Clerk instance secret key (``sk_live_…``/``sk_test_…``).
        http_client: An ``httpx.Client`` to send through (yours to close); by
            default one with connection pooling is made and closed by :meth:`close`.

    Keyword Args:
        api_url: Clerk's Backend API, ``https://api.clerk.com/v1`` by default; plain
            ``http`` is accepted only for loopback addresses (tests, local mocks).
        api_version: Sent as ``Clerk-API-Version`` when given.
        timeout: Seconds for each phase (connect, write, read, pool) of one call.
        cache_ttl: Seconds a successful verification is served from memory;
            ``0`` disables the cache. It bounds how long this process may still
            accept a key revoked elsewhere.
        cache_max_entries: Bound on cached verifications.
        max_retries: Further attempts after a connection error or 5xx. A 429 is
            not retried: it pauses every call of the process (of every process
            sharing ``redis_url``) for its ``Retry-After`` (1 s without one, 300 s
            at most), and calls meanwhile raise
            :class:`~apikeys.BackendUnavailableError` at once, with ``retry_after``
            the pause left.
        retry_backoff: Base of the exponential backoff, in seconds (with jitter).
        max_retry_wait: Longest pause before a retry; a longer ``Retry-After``
            ends the attempts at once (the error carries it as ``retry_after``).
        suspicious_failures: Failures against one key id that make a ``suspicious``
            event (see :mod:`apikeys._events`); ``0``: never. Clerk names no key
            for a wrong or unknown secret, so there is rarely an id to count.
        suspicious_window: Seconds over which they count, and the least time
            between two ``retired_key_used`` events (a revoked or expired key
            presented with its right secret) of one key.
        max_active_keys_per_owner: Active keys one owner may hold, counted from
            Clerk's list before each create; ``0`` disables the limit.
        verification_budget: Verifications of secrets not seen succeed in the
            last day, per window: a :class:`~apikeys.RateLimit` or its short form,
            ``"20/10s"`` by default (a fifth of a development instance's 100 per
            10 s). Past it such a secret raises
            :class:`~apikeys.VerificationBudgetSpentError` (503) and a ``flood``
            event is reported; keys seen succeed are never held back. ``None`` or
            ``0``: no budget. See ``docs/backends/clerk.md`` to size it.
        redis_url: Redis shared by every process: every key this SDK revokes,
            deletes, rotates out or cascades is announced there, and every
            process drops it from its cache at once; while the channel is down,
            the cache is off. Keys revoked outside this SDK (Clerk's dashboard)
            are still bounded by ``cache_ttl`` only. Burst detection counts
            there too, across processes, as do the verification budget, the
            secrets seen succeed and the pause after Clerk's 429.
        clock: The wall clock (a callable returning an aware UTC ``datetime``)
            that lifetimes are counted from and expiry is checked against,
            the cache's included; tests move it instead of waiting (see
            :class:`~apikeys.testing.FakeClerk`). Clerk keeps its own time.

    Example:
        >>> from apikeys.testing import FakeClerk
        >>> fake = FakeClerk()
        >>> manager = fake.key_manager()
        >>> new = manager.create_api_key(fake.new_user_id(), "CI pipeline", ["read:data"])
        >>> manager.validate_api_key(new.secret).id == new.id
        True
    """

    def __init__(
        self,
        secret_key: str | SecretStr,
        *,
        http_client: httpx.Client | None = None,
        **options: Any,
    ) -> None:
        super().__init__(secret_key, **options)
        self._owns_client = http_client is None
        self.http_client = http_client or httpx.Client(timeout=self.timeout, limits=_POOL_LIMITS)
        self._flights = _ThreadSingleFlight()
        self._sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> Self:
        """Build a manager from ``clerk://`` and :class:`~apikeys.Settings`."""
        return cls(**cls._options_from_settings(url, settings))

    def _perform(self, request: ClerkOp) -> Any:
        if isinstance(request, Sleep):
            self._sleep(request.seconds)
            return None
        if isinstance(request, Announce):
            return self._announce(request)
        if isinstance(request, Spend):
            return self._spend(request)
        if isinstance(request, GuardRequest):
            return request.perform(self.guard)
        if isinstance(request, SharedVerify):
            secret, digest = request.secret, request.digest
            return self._flights.run(
                digest, lambda: run_sync(self._verify_flow(secret, digest), self._perform)
            )
        return self.http_client.request(
            request.method,
            self._url(request.path),
            json=request.body,
            params=request.params,
            headers=self._request_headers(),
            timeout=self.timeout,
        )

    def close(self) -> None:
        """Stop listening for revocations; close the HTTP client, if this manager made it."""
        self._stop_hearing()
        self.guard.close()
        if self._owns_client:
            self.http_client.close()


class AsyncClerkKeyManager(AsyncShell, ClerkBase):
    """Async manager over Clerk's Backend API: the twin of :class:`ClerkKeyManager`.

    Concurrent validations of one uncached secret share one call to Clerk, and
    one caller's cancellation never cancels the others'.

    Args:
        secret_key: The Clerk instance secret key (``sk_live_…``/``sk_test_…``).
        http_client: An ``httpx.AsyncClient`` to send through (yours to close); by
            default one with connection pooling is made and closed by :meth:`close`.
        **options: Those of :class:`ClerkKeyManager`: ``api_url``, ``api_version``,
            ``timeout``, ``cache_ttl``, ``cache_max_entries``, ``max_retries``,
            ``retry_backoff``, ``max_retry_wait``, ``suspicious_failures``,
            ``suspicious_window``, ``max_active_keys_per_owner``,
            ``verification_budget``, ``redis_url``, ``clock``.
    """

    def __init__(
        self,
        secret_key: str | SecretStr,
        *,
        http_client: httpx.AsyncClient | None = None,
        **options: Any,
    ) -> None:
        super().__init__(secret_key, **options)
        self._owns_client = http_client is None
        self.http_client = http_client or httpx.AsyncClient(
            timeout=self.timeout, limits=_POOL_LIMITS
        )
        self._inflight: dict[bytes, asyncio.Future[VerifiedKey]] = {}
        self._sleep: Callable[[float], Any] = asyncio.sleep

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> Self:
        """Build a manager from ``clerk://`` and :class:`~apikeys.Settings`."""
        return cls(**cls._options_from_settings(url, settings))

    async def _perform(self, request: ClerkOp) -> Any:
        if isinstance(request, Sleep):
            await self._sleep(request.seconds)
            return None
        if isinstance(request, Announce):
            return await asyncio.to_thread(self._announce, request)
        if isinstance(request, Spend):
            return await self._spend_async(request)
        if isinstance(request, GuardRequest):
            return await request.perform_async(self.guard)
        if isinstance(request, SharedVerify):
            return await self._shared_verification(request)
        return await self.http_client.request(
            request.method,
            self._url(request.path),
            json=request.body,
            params=request.params,
            headers=self._request_headers(),
            timeout=self.timeout,
        )

    async def _shared_verification(self, request: SharedVerify) -> VerifiedKey:
        """Verify with Clerk, sharing one call among concurrent callers of one secret."""
        digest = request.digest
        shared = self._inflight.get(digest)
        if shared is None or shared.get_loop() is not asyncio.get_running_loop():
            # A task of its own, so one caller's cancellation never cancels the others'.
            shared = asyncio.ensure_future(
                run_async(self._verify_flow(request.secret, digest), self._perform)
            )
            self._inflight[digest] = shared
            shared.add_done_callback(lambda done: self._landed(digest, done))
        return await asyncio.shield(shared)

    def _landed(self, digest: bytes, done: asyncio.Future[VerifiedKey]) -> None:
        if self._inflight.get(digest) is done:
            del self._inflight[digest]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone away

    async def close(self) -> None:
        """Stop listening for revocations; close the HTTP client, if this manager made it."""
        await asyncio.to_thread(self._stop_hearing)
        await self.meter.aclose()
        await self.guard.aclose()
        if self._owns_client:
            await self.http_client.aclose()


__all__ = ["AsyncClerkKeyManager", "ClerkKeyManager"]
