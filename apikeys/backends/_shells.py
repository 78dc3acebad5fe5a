"""The public methods every flow-based backend shares, once for sync and once for async.

A backend base (:class:`FlowBackend`) writes each operation as a generator
flow that yields IO requests. Its sync manager mixes in :class:`SyncShell`
and its async manager :class:`AsyncShell`: these drive the flows with the
manager's ``_perform``, so a backend's twins only add ``_perform``,
``validate_api_key`` (where caching and single flight differ) and ``close``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from apikeys._arguments import KEEP, Keep
from apikeys._expiry import Expiration
from apikeys._flow import run_async, run_sync
from apikeys._models import APIKey, APIKeyPage, NewAPIKey

if TYPE_CHECKING:
    from typing import Self

_Flow = Generator[Any, Any, Any]


class FlowBackend:
    """The operation flows a backend base provides (each yields its IO requests)."""

    def _create_flow(
        self,
        user_id: str,
        name: str,
        scopes: Iterable[str] | str,
        expiration: Expiration,
        metadata: Mapping[str, Any] | None,
        created_by: str | None,
    ) -> Generator[Any, Any, NewAPIKey]:
        raise NotImplementedError

    def _list_flow(
        self, user_id: str, include_invalid: bool, limit: int, offset: int
    ) -> Generator[Any, Any, APIKeyPage]:
        raise NotImplementedError

    def _get_flow(self, key_id: str, user_id: str | None) -> Generator[Any, Any, APIKey]:
        raise NotImplementedError

    def _revoke_flow(
        self, key_id: str, reason: str | None, user_id: str | None
    ) -> Generator[Any, Any, APIKey]:
        raise NotImplementedError

    def _delete_flow(self, key_id: str, user_id: str | None) -> Generator[Any, Any, None]:
        raise NotImplementedError

    def _rotate_flow(
        self, key_id: str, grace: timedelta | float, expiration: Expiration | Keep
    ) -> Generator[Any, Any, NewAPIKey]:
        raise NotImplementedError


class SyncShell(FlowBackend):
    """Sync public methods: each runs its flow, performing IO with ``_perform``."""

    def _perform(self, request: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and pools."""
        raise NotImplementedError

    def create_api_key(
        self,
        user_id: str,
        name: str,
        scopes: Iterable[str] | str = (),
        expiration: Expiration = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        created_by: str | None = None,
    ) -> NewAPIKey:
        """Issue a key; see :meth:`apikeys.KeyManager.create_api_key`."""
        flow = self._create_flow(user_id, name, scopes, expiration, metadata, created_by)
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

    async def _perform(self, request: Any) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections and pools."""
        raise NotImplementedError

    async def create_api_key(
        self,
        user_id: str,
        name: str,
        scopes: Iterable[str] | str = (),
        expiration: Expiration = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        created_by: str | None = None,
    ) -> NewAPIKey:
        """Issue a key; see :meth:`apikeys.AsyncKeyManager.create_api_key`."""
        flow = self._create_flow(user_id, name, scopes, expiration, metadata, created_by)
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


__all__ = ["AsyncShell", "FlowBackend", "SyncShell"]
