"""The process-wide default managers behind ``apikeys.create_api_key`` and friends.

They are built from configuration on first use; :func:`configure` replaces
them (in tests, or to use an explicit manager).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from apikeys._errors import ConfigurationError
from apikeys._expiry import Expiration
from apikeys._factory import create_async_key_manager, create_key_manager
from apikeys._keylimits import Quota, RateLimit
from apikeys._meter import check_cost
from apikeys._models import NewAPIKey, VerifiedKey
from apikeys._protocols import AsyncKeyManager, KeyManager

_lock = threading.Lock()
_url: str | None = None
_options: dict[str, Any] = {}
_sync_manager: KeyManager | None = None
_async_manager: AsyncKeyManager | None = None
# Whether each manager was built here (and so is ours to close) or passed in.
_sync_owned = False
_async_owned = False
# Close tasks scheduled on a running loop, referenced until done so none is lost.
_closing: set[asyncio.Task[None]] = set()
logger = logging.getLogger("apikeys")


def configure(
    manager: KeyManager | AsyncKeyManager | None = None, *, url: str | None = None, **options: Any
) -> None:
    """Set what the module-level functions use.

    Pass an explicit manager (sync or async; it replaces that side only), or a
    ``url`` and settings from which both default managers are built on first use.
    Calling it with nothing resets to configuration from the environment.
    Managers built from configuration are closed when replaced (an async one on
    the running event loop, if any); a manager you pass in stays yours and is
    never closed here.

    Raises:
        ConfigurationError: Both a manager and a ``url`` or settings were given.

    Example:
        >>> import apikeys
        >>> apikeys.configure(url="sqlite:///:memory:")
    """
    global _url, _options, _sync_manager, _async_manager, _sync_owned, _async_owned
    if manager is not None and (url is not None or options):
        raise ConfigurationError("configure() takes a manager or a url and settings, not both")
    with _lock:
        old_sync = _sync_manager if _sync_owned else None
        old_async = _async_manager if _async_owned else None
        if manager is None:
            _url, _options, _sync_manager, _async_manager = url, dict(options), None, None
            _sync_owned = _async_owned = False
        elif inspect.iscoroutinefunction(manager.validate_api_key):
            _async_manager, _async_owned = manager, False  # type: ignore[assignment]
            old_sync = None  # the sync side is untouched
        else:
            _sync_manager, _sync_owned = manager, False  # type: ignore[assignment]
            old_async = None
    if old_sync is not None:
        old_sync.close()
    if old_async is not None:
        _close_async(old_async)


def _close_async(manager: AsyncKeyManager) -> None:
    """Close an async manager from synchronous code, on the running loop if there is one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        task = loop.create_task(manager.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
        return
    try:
        asyncio.run(manager.close())
    except Exception:  # best effort: the loop it was used on may be gone
        logger.debug("could not close the previous async default manager", exc_info=True)


def get_key_manager() -> KeyManager:
    """Return the default sync manager, building it from configuration on first use."""
    global _sync_manager, _sync_owned
    with _lock:
        if _sync_manager is None:
            _sync_manager, _sync_owned = create_key_manager(_url, **_options), True
        return _sync_manager


def get_async_key_manager() -> AsyncKeyManager:
    """Return the default async manager, building it from configuration on first use."""
    global _async_manager, _async_owned
    with _lock:
        if _async_manager is None:
            _async_manager, _async_owned = create_async_key_manager(_url, **_options), True
        return _async_manager


def create_api_key(
    user_id: str,
    name: str,
    scopes: Iterable[str] | str = (),
    expiration: Expiration = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    rate_limit: RateLimit | str | None = None,
    quota: Quota | str | None = None,
) -> NewAPIKey:
    """Issue a key with the default manager (see :meth:`KeyManager.create_api_key`)."""
    return get_key_manager().create_api_key(
        user_id, name, scopes, expiration, metadata=metadata, rate_limit=rate_limit, quota=quota
    )


def validate_api_key(
    secret: str, *, required_scopes: Iterable[str] = (), cost: int = 1
) -> VerifiedKey:
    """Validate a key with the default manager, spending ``cost`` from its limits
    (see :meth:`KeyManager.validate_api_key`)."""
    check_cost(cost)
    manager = get_key_manager()
    return manager.validate_api_key(secret, required_scopes=required_scopes, cost=cost)


async def acreate_api_key(
    user_id: str,
    name: str,
    scopes: Iterable[str] | str = (),
    expiration: Expiration = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    rate_limit: RateLimit | str | None = None,
    quota: Quota | str | None = None,
) -> NewAPIKey:
    """Async twin of :func:`create_api_key`, using the default async manager."""
    manager = get_async_key_manager()
    return await manager.create_api_key(
        user_id, name, scopes, expiration, metadata=metadata, rate_limit=rate_limit, quota=quota
    )


async def avalidate_api_key(
    secret: str, *, required_scopes: Iterable[str] = (), cost: int = 1
) -> VerifiedKey:
    """Async twin of :func:`validate_api_key`, using the default async manager."""
    check_cost(cost)
    manager = get_async_key_manager()
    return await manager.validate_api_key(secret, required_scopes=required_scopes, cost=cost)


__all__ = [
    "acreate_api_key",
    "avalidate_api_key",
    "configure",
    "create_api_key",
    "get_async_key_manager",
    "get_key_manager",
    "validate_api_key",
]
