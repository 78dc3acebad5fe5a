"""The key managers of a Django project: given to it, or built from a backend URL and owned."""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest

from apikeys._cache import VerificationCache
from apikeys._config import load_settings
from apikeys._default import get_async_key_manager, get_key_manager
from apikeys._errors import ConfigurationError
from apikeys._factory import create_async_key_manager, create_key_manager
from apikeys._protocols import AsyncKeyManager, KeyManager
from apikeys.integrations._authentication import is_async_manager


def _share_cache(built: object, other: object | None) -> None:
    """Make a manager just built use the other manager's verification cache.

    One process, one cache: a key revoked through the sync manager (a sync
    ``/api-keys`` view) must not stay verified in the async manager's cache
    (the async middleware) for up to ``CACHE_TTL``, nor the other way round.
    Backends without a :class:`~apikeys.VerificationCache` keep their own.
    """
    shared = getattr(other, "cache", None)
    if isinstance(shared, VerificationCache) and isinstance(
        getattr(built, "cache", None), VerificationCache
    ):
        built.cache = shared  # type: ignore[attr-defined]


# Closings started from async code, kept until they finish.
_closing: set[asyncio.Task[None]] = set()


class ProjectManagers:
    """The sync manager and the async manager of a project, each built on first use.

    Managers passed in stay their owner's (never closed here). Without them,
    managers are built from ``backend`` and ``options`` when either is given,
    and closed by :meth:`close`; otherwise the process-wide defaults are used
    (:func:`apikeys.get_key_manager`, configured by ``APIKEYS_BACKEND``).

    Raises:
        ConfigurationError: A manager of the wrong kind, or an invalid option.
    """

    def __init__(
        self,
        manager: KeyManager | None,
        async_manager: AsyncKeyManager | None,
        backend: str | None,
        options: dict[str, Any],
    ) -> None:
        if manager is not None and is_async_manager(manager):
            raise ConfigurationError("manager must be sync: apikeys.create_key_manager(...)")
        if async_manager is not None and not is_async_manager(async_manager):
            raise ConfigurationError(
                "async_manager must be async: apikeys.create_async_key_manager(...)"
            )
        if backend is not None and not isinstance(backend, str):
            raise ConfigurationError("BACKEND must be a backend URL string")
        # Build (and own) managers only when configuration names a backend.
        self._builds = backend is not None or bool(options)
        if self._builds:
            # What the factory will read (the environment too), checked now, not mid-request.
            load_settings(**options)
        self._backend = backend
        self._options = options
        self._manager = manager
        self._async_manager = async_manager
        self._owns_sync = False
        self._owns_async = False
        # The event loop the async manager serves; see async_for.
        self._async_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._lock = threading.Lock()

    def sync(self) -> KeyManager:
        """The sync manager, built on first use."""
        built = self._manager
        if built is not None:  # every request asks: no lock once it exists
            return built
        with self._lock:
            if self._manager is None:
                if not self._builds:
                    return get_key_manager()
                self._manager = create_key_manager(self._backend, **self._options)
                self._owns_sync = True
                _share_cache(self._manager, self._async_manager if self._owns_async else None)
            return self._manager

    def async_for(self, request: HttpRequest) -> AsyncKeyManager | None:
        """The async manager to serve ``request`` in this event loop, or ``None``
        when the sync manager must serve it (in a worker thread) instead.

        Under WSGI, Django runs each ``async def`` view in an event loop of its
        own, thrown away after the request: connections pooled there would die
        with it. So WSGI requests, and any loop other than the first one that
        used the async manager, are served by the sync manager.
        """
        if isinstance(request, WSGIRequest):
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._async_loop is None:
                self._async_loop = weakref.ref(loop)
            elif self._async_loop() is not loop:
                return None
            if self._async_manager is None:
                if not self._builds:
                    return get_async_key_manager()
                self._async_manager = create_async_key_manager(self._backend, **self._options)
                self._owns_async = True
                _share_cache(self._async_manager, self._manager if self._owns_sync else None)
            return self._async_manager

    def _take(
        self,
    ) -> tuple[KeyManager | None, AsyncKeyManager | None, asyncio.AbstractEventLoop | None]:
        """Detach the managers built here, with the async one's event loop."""
        with self._lock:
            sync_manager = self._manager if self._owns_sync else None
            async_manager = self._async_manager if self._owns_async else None
            loop = self._async_loop() if self._async_loop is not None else None
            if sync_manager is not None:
                self._manager, self._owns_sync = None, False
            if async_manager is not None:
                self._async_manager, self._owns_async = None, False
            self._async_loop = None
        return sync_manager, async_manager, loop

    def close(self) -> None:
        """Close the managers built here; they are rebuilt if used again.

        Managers passed in stay open. From async code, prefer :meth:`aclose`.
        """
        sync_manager, async_manager, loop = self._take()
        if sync_manager is not None:
            sync_manager.close()
        if async_manager is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            # Called from async code (a settings change in an async test): no blocking here.
            task = running.create_task(async_manager.close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        elif loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(async_manager.close(), loop).result(timeout=30)
        else:
            # Its loop is gone (under WSGI each async view has a loop of its own).
            asyncio.run(async_manager.close())

    async def aclose(self) -> None:
        """Close the managers built here, without blocking the event loop."""
        sync_manager, async_manager, loop = self._take()
        if async_manager is not None:
            running = asyncio.get_running_loop()
            if loop is not None and loop is not running and loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(async_manager.close(), loop)
                await asyncio.wrap_future(closing)
            else:
                await async_manager.close()
        if sync_manager is not None:
            await sync_to_async(sync_manager.close, thread_sensitive=False)()


__all__ = ["ProjectManagers"]
