"""The interface every backend implements, sync and async, with the same names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from apikeys._expiry import Expiration
from apikeys._models import APIKey, APIKeyPage, NewAPIKey, VerifiedKey
from apikeys._requests import KEEP, Keep


@runtime_checkable
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
    ) -> NewAPIKey:
        """Issue a key for ``user_id``; the returned secret is shown only this once."""
        ...

    def validate_api_key(self, secret: str, *, required_scopes: Iterable[str] = ()) -> VerifiedKey:
        """Verify a presented key and return its owner and scopes, or raise."""
        ...

    def list_api_keys(
        self, user_id: str, *, include_invalid: bool = False, limit: int = 50, offset: int = 0
    ) -> APIKeyPage:
        """List ``user_id``'s keys, newest first, never with secrets."""
        ...

    def get_api_key(self, key_id: str) -> APIKey:
        """Fetch one key by id."""
        ...

    def revoke_api_key(self, key_id: str, *, reason: str | None = None) -> APIKey:
        """Revoke a key at once; idempotent."""
        ...

    def delete_api_key(self, key_id: str) -> None:
        """Delete a key for good."""
        ...

    def rotate_api_key(
        self,
        key_id: str,
        *,
        grace: timedelta | float = 0,
        expiration: Expiration | Keep = KEEP,
    ) -> NewAPIKey:
        """Issue a replacement key; the old one stops working after ``grace``."""
        ...

    def close(self) -> None:
        """Release connections and pools."""
        ...


@runtime_checkable
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
    ) -> NewAPIKey:
        """Issue a key for ``user_id``; the returned secret is shown only this once."""
        ...

    async def validate_api_key(
        self, secret: str, *, required_scopes: Iterable[str] = ()
    ) -> VerifiedKey:
        """Verify a presented key and return its owner and scopes, or raise."""
        ...

    async def list_api_keys(
        self, user_id: str, *, include_invalid: bool = False, limit: int = 50, offset: int = 0
    ) -> APIKeyPage:
        """List ``user_id``'s keys, newest first, never with secrets."""
        ...

    async def get_api_key(self, key_id: str) -> APIKey:
        """Fetch one key by id."""
        ...

    async def revoke_api_key(self, key_id: str, *, reason: str | None = None) -> APIKey:
        """Revoke a key at once; idempotent."""
        ...

    async def delete_api_key(self, key_id: str) -> None:
        """Delete a key for good."""
        ...

    async def rotate_api_key(
        self,
        key_id: str,
        *,
        grace: timedelta | float = 0,
        expiration: Expiration | Keep = KEEP,
    ) -> NewAPIKey:
        """Issue a replacement key; the old one stops working after ``grace``."""
        ...

    async def close(self) -> None:
        """Release connections and pools."""
        ...


__all__ = ["AsyncKeyManager", "KeyManager"]
