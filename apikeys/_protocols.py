"""The interface every backend implements, sync and async, with the same names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Protocol

from apikeys._arguments import KEEP, Keep
from apikeys._expiry import Expiration
from apikeys._keylimits import Quota, RateLimit
from apikeys._models import APIKey, APIKeyPage, NewAPIKey, VerifiedKey


class KeyManager(Protocol):
    """A synchronous API-key store. Every backend's sync manager satisfies it."""

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
        """Issue a key for ``user_id``; the returned secret is shown only this once.

        ``created_by`` is the id of the key creating this one (an active key of the
        same owner), or ``None``: revoking or deleting that key revokes this one.
        ``rate_limit`` and ``quota`` (a ``RateLimit``/``Quota`` or its short form,
        ``"100/1m"``, ``"100000/30d"``) are what the key may spend; the quota's
        first period starts now. Metadata may not use the top-level name
        ``"apikeys"`` (reserved for the limits).
        Raises :class:`~apikeys.KeyLimitReachedError` when the owner already holds
        ``max_active_keys_per_owner`` active keys.
        """
        ...

    def validate_api_key(
        self, secret: str, *, required_scopes: Iterable[str] = (), cost: int = 1
    ) -> VerifiedKey:
        """Verify a presented key and return its owner and scopes, or raise.

        A key with a rate limit or a quota then spends ``cost`` units (1 to 10**12)
        from both, all or nothing; the returned key (this call's own copy) carries
        what is left in :attr:`~apikeys.VerifiedKey.usage`. An invalid, revoked or
        expired key, or a missing scope, is refused first and spends nothing.
        Raises :class:`~apikeys.RateLimitedError` (429, with ``retry_after``) or
        :class:`~apikeys.QuotaExceededError` (429, with ``refills_at``) when a limit
        has no room for ``cost``; a refused call spends nothing.
        """
        ...

    def list_api_keys(
        self, user_id: str, *, include_invalid: bool = False, limit: int = 50, offset: int = 0
    ) -> APIKeyPage:
        """List ``user_id``'s keys, newest first, never with secrets."""
        ...

    def get_api_key(self, key_id: str, *, user_id: str | None = None) -> APIKey:
        """Fetch one key by id; with ``user_id``, only that owner's (else 404, as unknown)."""
        ...

    def revoke_api_key(
        self, key_id: str, *, reason: str | None = None, user_id: str | None = None
    ) -> APIKey:
        """Revoke a key at once, and every key it created, transitively; idempotent.

        With ``user_id``, only that owner's key (else 404, as unknown).
        """
        ...

    def delete_api_key(self, key_id: str, *, user_id: str | None = None) -> None:
        """Delete a key for good, revoking every key it created, transitively.

        With ``user_id``, only that owner's key (else 404, as unknown).
        """
        ...

    def rotate_api_key(
        self,
        key_id: str,
        *,
        grace: timedelta | float = 0,
        expiration: Expiration | Keep = KEEP,
    ) -> NewAPIKey:
        """Issue a replacement key; the old one stops working after ``grace``.

        The keys the old key created are handed over to the replacement.
        """
        ...

    def update_api_key_limits(
        self,
        key_id: str,
        *,
        rate_limit: RateLimit | str | Keep | None = KEEP,
        quota: Quota | str | Keep | None = KEEP,
        user_id: str | None = None,
    ) -> APIKey:
        """Set, change or remove a key's rate limit and quota; return the key.

        Each of ``rate_limit`` and ``quota`` is a ``RateLimit``/``Quota``, its short
        form, ``None`` to remove it, or ``KEEP`` (the default) to leave it as it is.
        Setting a quota, even the same one, starts its first period now with nothing
        spent; a kept quota keeps its period and what was spent. Cached validations
        of the key are dropped, so the change applies to its next use here.
        With ``user_id``, only that owner's key (else 404, as unknown). Raises
        :class:`~apikeys.KeyNotFoundError` for an unknown key and
        :class:`~apikeys.InvalidInputError` for a revoked one or a bad limit.
        """
        ...

    def close(self) -> None:
        """Release connections and pools."""
        ...


class AsyncKeyManager(Protocol):
    """The async twin of :class:`KeyManager`: same names, awaitable."""

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
        """Issue a key for ``user_id``; the returned secret is shown only this once.

        ``created_by`` is the id of the key creating this one (an active key of the
        same owner), or ``None``: revoking or deleting that key revokes this one.
        ``rate_limit`` and ``quota`` (a ``RateLimit``/``Quota`` or its short form,
        ``"100/1m"``, ``"100000/30d"``) are what the key may spend; the quota's
        first period starts now. Metadata may not use the top-level name
        ``"apikeys"`` (reserved for the limits).
        Raises :class:`~apikeys.KeyLimitReachedError` when the owner already holds
        ``max_active_keys_per_owner`` active keys.
        """
        ...

    async def validate_api_key(
        self, secret: str, *, required_scopes: Iterable[str] = (), cost: int = 1
    ) -> VerifiedKey:
        """Verify a presented key and return its owner and scopes, or raise.

        A key with a rate limit or a quota then spends ``cost`` units (1 to 10**12)
        from both, all or nothing; the returned key (this call's own copy) carries
        what is left in :attr:`~apikeys.VerifiedKey.usage`. An invalid, revoked or
        expired key, or a missing scope, is refused first and spends nothing.
        Raises :class:`~apikeys.RateLimitedError` (429, with ``retry_after``) or
        :class:`~apikeys.QuotaExceededError` (429, with ``refills_at``) when a limit
        has no room for ``cost``; a refused call spends nothing.
        """
        ...

    async def list_api_keys(
        self, user_id: str, *, include_invalid: bool = False, limit: int = 50, offset: int = 0
    ) -> APIKeyPage:
        """List ``user_id``'s keys, newest first, never with secrets."""
        ...

    async def get_api_key(self, key_id: str, *, user_id: str | None = None) -> APIKey:
        """Fetch one key by id; with ``user_id``, only that owner's (else 404, as unknown)."""
        ...

    async def revoke_api_key(
        self, key_id: str, *, reason: str | None = None, user_id: str | None = None
    ) -> APIKey:
        """Revoke a key at once, and every key it created, transitively; idempotent.

        With ``user_id``, only that owner's key (else 404, as unknown).
        """
        ...

    async def delete_api_key(self, key_id: str, *, user_id: str | None = None) -> None:
        """Delete a key for good, revoking every key it created, transitively.

        With ``user_id``, only that owner's key (else 404, as unknown).
        """
        ...

    async def rotate_api_key(
        self,
        key_id: str,
        *,
        grace: timedelta | float = 0,
        expiration: Expiration | Keep = KEEP,
    ) -> NewAPIKey:
        """Issue a replacement key; the old one stops working after ``grace``.

        The keys the old key created are handed over to the replacement.
        """
        ...

    async def update_api_key_limits(
        self,
        key_id: str,
        *,
        rate_limit: RateLimit | str | Keep | None = KEEP,
        quota: Quota | str | Keep | None = KEEP,
        user_id: str | None = None,
    ) -> APIKey:
        """Set, change or remove a key's rate limit and quota; return the key.

        Each of ``rate_limit`` and ``quota`` is a ``RateLimit``/``Quota``, its short
        form, ``None`` to remove it, or ``KEEP`` (the default) to leave it as it is.
        Setting a quota, even the same one, starts its first period now with nothing
        spent; a kept quota keeps its period and what was spent. Cached validations
        of the key are dropped, so the change applies to its next use here.
        With ``user_id``, only that owner's key (else 404, as unknown). Raises
        :class:`~apikeys.KeyNotFoundError` for an unknown key and
        :class:`~apikeys.InvalidInputError` for a revoked one or a bad limit.
        """
        ...

    async def close(self) -> None:
        """Release connections and pools."""
        ...


__all__ = ["AsyncKeyManager", "KeyManager"]
