"""The public methods every flow-based backend shares, once for sync and once for async.

A backend base (:class:`FlowBackend`) writes each operation as a generator
flow that yields IO requests. Its sync manager mixes in :class:`SyncShell`
and its async manager :class:`AsyncShell`: these drive the flows with the
manager's ``_perform``, so a backend's twins only add ``_perform`` and
``close``. Validation is written here once too: a cache hit is answered
without a flow; on a miss the backend reads the presented string without IO
(``_read_presented``), then its ``_validate_flow`` runs. A key with limits then
spends the call's cost (``_spend_flow``), on a hit as on a miss; a key without
limits is returned as it is, with no counting at all. Only then is the call
reported ``validated``: a call its key's limits refuse is reported once, as
``rejected``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from types import TracebackType
from typing import TYPE_CHECKING, Any

from apikeys._arguments import KEEP, Keep, check_required_scopes
from apikeys._cache import VerificationCache
from apikeys._errors import InsufficientScopeError, InvalidKeyError, RateLimitedError
from apikeys._events import EventReporter
from apikeys._expiry import Expiration, WallClock
from apikeys._flow import run_async, run_sync
from apikeys._keyformat import MAX_KEY_LENGTH
from apikeys._keylimits import Quota, RateLimit
from apikeys._keystate import check_scopes
from apikeys._meter import Allowance, KeyLimits, MemoryMeter, Meter, check_cost
from apikeys._models import APIKey, APIKeyPage, NewAPIKey, VerifiedKey
from apikeys._revocations import RevocationChannel, RevocationListener

if TYPE_CHECKING:
    from typing import Self


@lru_cache(maxsize=1024)
def _required_from_tuple(scopes: tuple[str, ...]) -> tuple[str, ...]:
    return check_required_scopes(scopes)


@lru_cache(maxsize=1024)
def _required_from_text(scopes: str) -> tuple[str, ...]:
    return check_required_scopes(scopes)


def required_scopes_of(required_scopes: Iterable[str] | str) -> tuple[str, ...]:
    """Validate ``required_scopes``, memoised: routes pass the same few sets again and again.

    Only an empty sequence requires no scope; ``None`` and blank strings are
    refused (see :func:`~apikeys._arguments.check_required_scopes`).
    """
    if required_scopes == ():  # the usual case, answered first
        return ()
    if isinstance(required_scopes, str):
        return _required_from_text(required_scopes)
    if not isinstance(required_scopes, tuple | list | set | frozenset):
        # Anything else (a generator, a wrong type) goes to the validator, which
        # bounds what it reads and names the problem.
        return check_required_scopes(required_scopes)
    if not required_scopes:
        return ()
    scopes = tuple(required_scopes)
    try:
        return _required_from_tuple(scopes)
    except TypeError:  # unhashable items: let the validator name the problem
        return check_required_scopes(scopes)


def meter_for(redis_url: str | None, clock: WallClock) -> Meter:
    """The meter a manager counts rate limits (and, without a database, quotas) in:
    Redis, shared by every process, when ``redis_url`` is set; else this process's memory."""
    if redis_url is None:
        return MemoryMeter(clock=clock)
    from apikeys._redis_meter import RedisMeter

    return RedisMeter(redis_url, clock=clock)


@dataclass(frozen=True, slots=True)
class Spend:
    """IO request: charge ``cost`` to ``limits`` of ``meter_id`` in the manager's meter,
    all or nothing; the result is the :class:`~apikeys.Allowance` left."""

    meter_id: str
    limits: KeyLimits
    cost: int


def meter_limits_of(verified: VerifiedKey) -> KeyLimits:
    """What a validated key may spend, as the meter reads it."""
    return KeyLimits(verified.rate_limit, verified.quota, verified.quota_anchor)


@dataclass(frozen=True)
class Announce:
    """IO request: tell every process sharing the store that ``key_ids`` were revoked."""

    key_ids: tuple[str, ...]


class FlowBackend(ABC):
    """The operation flows a backend base provides (each yields its IO requests),
    and the IO-free ends of validation: the cache lookup and the verdict.
    """

    cache: VerificationCache
    events: EventReporter
    #: Counts the calls of keys with limits: see :func:`meter_for`.
    meter: Meter
    #: Where revocations are announced to, and heard from, the other processes.
    revocations: RevocationChannel | None = None
    _listener: RevocationListener | None = None

    def _hear_revocations_on(self, channel: RevocationChannel | None) -> None:
        """Announce revocations on ``channel``, and drop the keys others announce from the cache."""
        self.revocations = channel
        if channel is not None and self.cache.enabled:
            # Started by the first cache miss, not here: a manager built before a server
            # forks its workers must not fork a running thread (and the locks it holds).
            self._listener = RevocationListener(channel.subscribe, [self.cache], name=channel.name)

    def _listening(self) -> None:
        # On each cache miss: restarts the listener in a forked worker (cheap otherwise).
        # Until it has subscribed, the cache is suspended, so hits cannot skip this.
        if self._listener is not None:
            self._listener.start()

    def _announced(self, key_ids: Iterable[str]) -> Generator[Any, Any, None]:
        """Yield the announcement of ``key_ids``' revocation, when there is a channel."""
        if self.revocations is not None:
            yield Announce(tuple(key_ids))

    def _announce(self, request: Announce) -> None:
        """Perform an :class:`Announce` (blocking: the async twins run it in a thread)."""
        if self.revocations is not None:
            self.revocations.announce(request.key_ids)

    def _stop_hearing(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self.revocations is not None:
            self.revocations.close()
        self.meter.close()

    def _spend_flow(self, verified: VerifiedKey, cost: int) -> Generator[Any, Any, VerifiedKey]:
        """Charge ``cost`` to the limits of ``verified`` (a key with limits), all or
        nothing, and return this call's copy of it, with what is left.

        Raises:
            RateLimitedError: The rate limit has no room for ``cost``; nothing is charged.
            QuotaExceededError: The quota has no room for ``cost``; nothing is charged.
        """
        allowance = yield Spend(verified.meter_id, meter_limits_of(verified), cost)
        return with_usage(verified, allowance)

    def _spending(self, verified: VerifiedKey, cost: int) -> Generator[Any, Any, VerifiedKey]:
        """:meth:`_spend_flow`, with a refusal naming the key and reported as ``rejected``."""
        try:
            return (yield from self._spend_flow(verified, cost))
        except RateLimitedError as exc:
            exc.key_id = verified.id
            self.events.rejected(exc, user_id=verified.user_id)
            raise

    def _spend(self, request: Spend) -> Allowance:
        """Perform a :class:`Spend` for sync callers."""
        return self.meter.spend(request.meter_id, request.limits, request.cost)

    async def _spend_async(self, request: Spend) -> Allowance:
        """Perform a :class:`Spend` for async callers."""
        return await self.meter.spend_async(request.meter_id, request.limits, request.cost)

    #: Longest presented secret looked at; longer ones are refused unread.
    max_secret_length: int = MAX_KEY_LENGTH

    def _cached_validation(self, secret: object, required: tuple[str, ...]) -> VerifiedKey | None:
        """Answer a validation from the cache, or return ``None`` on a miss.

        Only keys that passed full verification are ever cached, under a digest
        of the exact presented string, so a hit needs no parsing and no IO.

        Raises:
            InvalidKeyError: ``secret`` is not a string or is too long.
            InsufficientScopeError: A hit lacks a required scope.
        """
        if not isinstance(secret, str) or len(secret) > self.max_secret_length:
            raise self._refusal()
        verified = self.cache.lookup(secret)
        return None if verified is None else self._accepted(verified, required)

    def _refusal(self) -> InvalidKeyError:
        """A refusal of a presented string that names no key, reported."""
        refusal = InvalidKeyError()
        self.events.rejected(refusal)
        return refusal

    def _accepted(self, verified: VerifiedKey, required: tuple[str, ...]) -> VerifiedKey:
        """Check the scopes one caller needs, and report a refusal."""
        try:
            check_scopes(verified, required)
        except InsufficientScopeError as exc:
            self.events.rejected(exc, user_id=verified.user_id)
            raise
        return verified

    def _validated(self, verified: VerifiedKey) -> VerifiedKey:
        """Report a validation that passed in full: verified, scopes held, cost spent."""
        self.events.report("validated", verified.id, user_id=verified.user_id)
        return verified

    @abstractmethod
    def _read_presented(self, secret: str) -> Any:
        """Read what validation needs from a presented string, without IO, or
        raise :meth:`_refusal` when it cannot be a key of this backend."""

    @abstractmethod
    def _validate_flow(
        self, presented: Any, required: tuple[str, ...], /
    ) -> Generator[Any, Any, VerifiedKey]:
        """Validate what :meth:`_read_presented` read from a secret the cache does
        not hold: verify it, check its state and ``required`` scopes, cache it,
        and report a refusal (the shells report success, once the cost is spent)."""

    @abstractmethod
    def _create_flow(
        self,
        user_id: str,
        name: str,
        scopes: Iterable[str] | str,
        expiration: Expiration,
        metadata: Mapping[str, Any] | None,
        created_by: str | None,
        rate_limit: object,
        quota: object,
    ) -> Generator[Any, Any, NewAPIKey]:
        """Issue a key."""

    @abstractmethod
    def _list_flow(
        self, user_id: str, include_invalid: bool, limit: int, offset: int
    ) -> Generator[Any, Any, APIKeyPage]:
        """List a user's keys."""

    @abstractmethod
    def _get_flow(self, key_id: str, user_id: str | None) -> Generator[Any, Any, APIKey]:
        """Fetch one key."""

    @abstractmethod
    def _revoke_flow(
        self, key_id: str, reason: str | None, user_id: str | None
    ) -> Generator[Any, Any, APIKey]:
        """Revoke a key and what it created."""

    @abstractmethod
    def _delete_flow(self, key_id: str, user_id: str | None) -> Generator[Any, Any, None]:
        """Delete a key, revoking what it created."""

    @abstractmethod
    def _rotate_flow(
        self, key_id: str, grace: timedelta | float, expiration: Expiration | Keep
    ) -> Generator[Any, Any, NewAPIKey]:
        """Replace a key."""

    @abstractmethod
    def _update_limits_flow(
        self, key_id: str, rate_limit: object, quota: object, user_id: str | None
    ) -> Generator[Any, Any, APIKey]:
        """Set, change or remove a key's limits."""


def with_usage(verified: VerifiedKey, allowance: Allowance) -> VerifiedKey:
    """This call's copy of ``verified`` (shared through the cache), with what it left."""
    return verified.model_copy(update={"usage": allowance})


class SyncShell(FlowBackend):
    """Sync public methods: each runs its flow, performing IO with ``_perform``."""

    @abstractmethod
    def _perform(self, request: Any) -> Any:
        """Perform one IO request a flow yielded; return its result."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and pools."""

    def validate_api_key(
        self, secret: str, *, required_scopes: Iterable[str] = (), cost: int = 1
    ) -> VerifiedKey:
        """Validate a presented key; see :meth:`apikeys.KeyManager.validate_api_key`."""
        check_cost(cost)
        required = required_scopes_of(required_scopes)
        verified = self._cached_validation(secret, required)
        if verified is None:
            # Garbage, the commonest hostile input, is refused before a flow is built.
            presented = self._read_presented(secret)
            self._listening()
            verified = run_sync(self._validate_flow(presented, required), self._perform)
        if verified.rate_limit is not None or verified.quota is not None:
            verified = run_sync(self._spending(verified, cost), self._perform)
        return self._validated(verified)

    def create_api_key(
        self,
        user_id: str,
        name: str,
        scopes: Iterable[str] | str = (),
        expiration: Expiration = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        created_by: str | None = None,
        rate_limit: RateLimit | str | None = None,
        quota: Quota | str | None = None,
    ) -> NewAPIKey:
        """Issue a key; see :meth:`apikeys.KeyManager.create_api_key`."""
        flow = self._create_flow(
            user_id, name, scopes, expiration, metadata, created_by, rate_limit, quota
        )
        return run_sync(flow, self._perform)

    def list_api_keys(
        self, user_id: str, *, include_invalid: bool = False, limit: int = 50, offset: int = 0
    ) -> APIKeyPage:
        """List a user's keys; see :meth:`apikeys.KeyManager.list_api_keys`."""
        return run_sync(self._list_flow(user_id, include_invalid, limit, offset), self._perform)

    def get_api_key(self, key_id: str, *, user_id: str | None = None) -> APIKey:
        """Fetch one key; see :meth:`apikeys.KeyManager.get_api_key`."""
        return run_sync(self._get_flow(key_id, user_id), self._perform)

    def revoke_api_key(
        self, key_id: str, *, reason: str | None = None, user_id: str | None = None
    ) -> APIKey:
        """Revoke a key; see :meth:`apikeys.KeyManager.revoke_api_key`."""
        return run_sync(self._revoke_flow(key_id, reason, user_id), self._perform)

    def delete_api_key(self, key_id: str, *, user_id: str | None = None) -> None:
        """Delete a key; see :meth:`apikeys.KeyManager.delete_api_key`."""
        run_sync(self._delete_flow(key_id, user_id), self._perform)

    def rotate_api_key(
        self, key_id: str, *, grace: timedelta | float = 0, expiration: Expiration | Keep = KEEP
    ) -> NewAPIKey:
        """Replace a key; see :meth:`apikeys.KeyManager.rotate_api_key`."""
        return run_sync(self._rotate_flow(key_id, grace, expiration), self._perform)

    def update_api_key_limits(
        self,
        key_id: str,
        *,
        rate_limit: RateLimit | str | Keep | None = KEEP,
        quota: Quota | str | Keep | None = KEEP,
        user_id: str | None = None,
    ) -> APIKey:
        """Change a key's limits; see :meth:`apikeys.KeyManager.update_api_key_limits`."""
        flow = self._update_limits_flow(key_id, rate_limit, quota, user_id)
        return run_sync(flow, self._perform)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncShell(FlowBackend):
    """Async public methods: each awaits its flow, performing IO with ``_perform``."""

    @abstractmethod
    async def _perform(self, request: Any) -> Any:
        """Perform one IO request a flow yielded; return its result."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and pools."""

    async def validate_api_key(
        self, secret: str, *, required_scopes: Iterable[str] = (), cost: int = 1
    ) -> VerifiedKey:
        """Validate a presented key; see :meth:`apikeys.AsyncKeyManager.validate_api_key`."""
        check_cost(cost)
        required = required_scopes_of(required_scopes)
        verified = self._cached_validation(secret, required)
        if verified is None:
            # Garbage, the commonest hostile input, is refused before a flow is built.
            presented = self._read_presented(secret)
            self._listening()
            verified = await run_async(self._validate_flow(presented, required), self._perform)
        if verified.rate_limit is not None or verified.quota is not None:
            verified = await run_async(self._spending(verified, cost), self._perform)
        return self._validated(verified)

    async def create_api_key(
        self,
        user_id: str,
        name: str,
        scopes: Iterable[str] | str = (),
        expiration: Expiration = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        created_by: str | None = None,
        rate_limit: RateLimit | str | None = None,
        quota: Quota | str | None = None,
    ) -> NewAPIKey:
        """Issue a key; see :meth:`apikeys.AsyncKeyManager.create_api_key`."""
        flow = self._create_flow(
            user_id, name, scopes, expiration, metadata, created_by, rate_limit, quota
        )
        return await run_async(flow, self._perform)

    async def list_api_keys(
        self, user_id: str, *, include_invalid: bool = False, limit: int = 50, offset: int = 0
    ) -> APIKeyPage:
        """List a user's keys; see :meth:`apikeys.AsyncKeyManager.list_api_keys`."""
        flow = self._list_flow(user_id, include_invalid, limit, offset)
        return await run_async(flow, self._perform)

    async def get_api_key(self, key_id: str, *, user_id: str | None = None) -> APIKey:
        """Fetch one key; see :meth:`apikeys.AsyncKeyManager.get_api_key`."""
        return await run_async(self._get_flow(key_id, user_id), self._perform)

    async def revoke_api_key(
        self, key_id: str, *, reason: str | None = None, user_id: str | None = None
    ) -> APIKey:
        """Revoke a key; see :meth:`apikeys.AsyncKeyManager.revoke_api_key`."""
        return await run_async(self._revoke_flow(key_id, reason, user_id), self._perform)

    async def delete_api_key(self, key_id: str, *, user_id: str | None = None) -> None:
        """Delete a key; see :meth:`apikeys.AsyncKeyManager.delete_api_key`."""
        await run_async(self._delete_flow(key_id, user_id), self._perform)

    async def rotate_api_key(
        self, key_id: str, *, grace: timedelta | float = 0, expiration: Expiration | Keep = KEEP
    ) -> NewAPIKey:
        """Replace a key; see :meth:`apikeys.AsyncKeyManager.rotate_api_key`."""
        return await run_async(self._rotate_flow(key_id, grace, expiration), self._perform)

    async def update_api_key_limits(
        self,
        key_id: str,
        *,
        rate_limit: RateLimit | str | Keep | None = KEEP,
        quota: Quota | str | Keep | None = KEEP,
        user_id: str | None = None,
    ) -> APIKey:
        """Change a key's limits; see :meth:`apikeys.AsyncKeyManager.update_api_key_limits`."""
        flow = self._update_limits_flow(key_id, rate_limit, quota, user_id)
        return await run_async(flow, self._perform)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


__all__ = [
    "Announce",
    "AsyncShell",
    "FlowBackend",
    "Spend",
    "SyncShell",
    "meter_for",
    "meter_limits_of",
    "with_usage",
]
