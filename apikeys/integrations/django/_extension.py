"""The Django side of the core: ``settings.APIKEYS``, the managers, requests and responses."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from apikeys._errors import APIKeysError, ConfigurationError
from apikeys._models import VerifiedKey
from apikeys._protocols import AsyncKeyManager, KeyManager
from apikeys.integrations._authentication import (
    API_KEY_ATTRIBUTE,
    NOT_ADMITTED,
    Admission,
    admit_async,
    admit_sync,
    still_to_charge,
)
from apikeys.integrations._credentials import WSGICredentials
from apikeys.integrations._management import (
    ManagementRequest,
    handle_management_async,
    handle_management_sync,
)
from apikeys.integrations._responses import CoreResponse, error_response
from apikeys.integrations._settings import IntegrationSettings, Limiters, split_config
from apikeys.integrations.django._managers import ProjectManagers

logger = logging.getLogger("apikeys.integrations.django")

SETTING_NAME = "APIKEYS"
# Where a request's Admission (its verified key, what it was charged) is kept,
# on that request object only.
_ADMISSION_ATTRIBUTE = "_apikeys_admission"


def _admission(request: HttpRequest) -> Admission:
    admitted = getattr(request, _ADMISSION_ATTRIBUTE, None)
    return admitted if isinstance(admitted, Admission) else NOT_ADMITTED


def _storing(request: HttpRequest) -> Callable[[Admission], None]:
    def store(admitted: Admission) -> None:
        setattr(request, _ADMISSION_ATTRIBUTE, admitted)

    return store


def _publish(request: HttpRequest, verified: VerifiedKey) -> VerifiedKey:
    setattr(request, API_KEY_ATTRIBUTE, verified)
    return verified


def to_response(core: CoreResponse) -> HttpResponse:
    """Turn a core response into a Django one."""
    response = HttpResponse(core.content(), status=core.status, content_type=core.media_type)
    if core.body is None:
        del response["Content-Type"]
    for name, value in core.headers:
        response[name] = value
    return response


def query_pairs(request: HttpRequest) -> list[tuple[str, str]]:
    """The query string as ``(name, value)`` pairs, repeated names kept."""
    return [(name, value) for name, values in request.GET.lists() for value in values]


class APIKeys:
    """Binds key managers and :class:`IntegrationSettings` to a Django project.

    Django projects rarely build one: :meth:`current` reads ``settings.APIKEYS``
    on first use. Its ``BACKEND`` is the backend URL, integration fields
    (``EXEMPT_PATHS``, ``HEADER_NAMES``…) configure the requests, and every other
    key is an :class:`apikeys.Settings` option for the managers. Without a
    backend or manager option, the process-wide defaults are used
    (:func:`apikeys.get_key_manager`, configured by ``APIKEYS_BACKEND``).

    Sync views and the sync middleware use the sync manager; ``async def``
    views and the async middleware use the async manager, built lazily.

    Args:
        settings: Integration settings (defaults when omitted).
        manager: A sync manager to use; it stays yours (never closed here).
        async_manager: An async manager to use; it stays yours.
        backend: A backend URL from which the managers are built, and owned.
        **manager_options: :class:`apikeys.Settings` options for those managers.

    Raises:
        ConfigurationError: A manager of the wrong kind, or an invalid option.
    """

    def __init__(
        self,
        *,
        settings: IntegrationSettings | None = None,
        manager: KeyManager | None = None,
        async_manager: AsyncKeyManager | None = None,
        backend: str | None = None,
        **manager_options: Any,
    ) -> None:
        self.settings = settings or IntegrationSettings()
        self.limiters = Limiters.of(self.settings)
        self.managers = ProjectManagers(manager, async_manager, backend, manager_options)

    @classmethod
    def from_settings(cls, config: Mapping[str, Any] | None = None) -> APIKeys:
        """Build from ``config``, by default Django's ``settings.APIKEYS``.

        Raises:
            ConfigurationError: The setting is not a mapping, or holds an
                invalid value.
        """
        if config is None:
            config = getattr(django_settings, SETTING_NAME, None) or {}
        if not isinstance(config, Mapping):
            raise ConfigurationError(f"settings.{SETTING_NAME} must be a dict")
        integration, backend, options = split_config(config)
        return cls(settings=integration, backend=backend, **options)

    @classmethod
    def current(cls) -> APIKeys:
        """The project's instance, built from ``settings.APIKEYS`` on first use.

        It is rebuilt when the setting changes (``override_settings`` in tests).
        """
        global _current
        current = _current
        if current is not None:  # every request asks: no lock once it exists
            return current
        with _current_lock:
            if _current is None:
                _current = cls.from_settings()
            return _current

    @property
    def management_scopes(self) -> tuple[str, ...]:
        """What every ``/api-keys`` call must hold."""
        return self.settings.management_scopes

    @property
    def manager(self) -> KeyManager:
        """The sync manager, built on first use."""
        return self.managers.sync()

    @staticmethod
    def credentials(request: HttpRequest) -> WSGICredentials:
        """What ``request`` presents: its ``META`` (a WSGI environ under ASGI too).

        The scheme is Django's, which honours ``SECURE_PROXY_SSL_HEADER``.
        """
        return WSGICredentials(request.META, lambda: request.scheme)

    def authenticate(
        self, request: HttpRequest, scopes: tuple[str, ...] = (), cost: int = 1
    ) -> VerifiedKey:
        """Verify the request's key with the sync manager, spend ``cost``, and set ``request.api_key``.

        A key already verified for this very request (by the middleware, then a
        decorated view or DRF) is reused, checked for ``scopes`` (which must come
        from :func:`~apikeys.integrations._authentication.required_scopes`) and
        charged only what ``cost`` adds to what it was charged. It is read back
        only from a private attribute of the request object, which no other
        request shares; ``request.api_key`` is only written.

        Raises:
            APIKeysError: The key is missing or refused, or the backend failed.
        """
        admitted = _admission(request)
        if admitted.verified is not None and still_to_charge(admitted, scopes, cost) == 0:
            return _publish(request, admitted.verified)
        verified = admit_sync(
            self.manager, self.credentials(request), self.settings, scopes, cost,
            admitted=admitted, store=_storing(request), limiters=self.limiters, source="django",
        )  # fmt: skip
        return _publish(request, verified)

    async def aauthenticate(
        self, request: HttpRequest, scopes: tuple[str, ...] = (), cost: int = 1
    ) -> VerifiedKey:
        """Async twin of :meth:`authenticate`, with the async manager."""
        admitted = _admission(request)
        if admitted.verified is not None and still_to_charge(admitted, scopes, cost) == 0:
            return _publish(request, admitted.verified)
        manager = self.managers.async_for(request)
        if manager is None:
            authenticate = sync_to_async(self.authenticate, thread_sensitive=False)
            return await authenticate(request, scopes, cost)
        verified = await admit_async(
            manager, self.credentials(request), self.settings, scopes, cost,
            admitted=admitted, store=_storing(request), limiters=self.limiters, source="django",
        )  # fmt: skip
        return _publish(request, verified)

    @staticmethod
    def with_rate_limit_fields(request: HttpRequest, response: HttpResponseBase) -> None:
        """Add the ``RateLimit`` header fields of the request's key to ``response``,
        unless it has them: every answer of a protected route carries them."""
        fields = _admission(request).fields
        if fields and not response.has_header("RateLimit"):
            for name, value in fields:
                response[name] = value

    def response_for(self, exc: APIKeysError, request: HttpRequest | None = None) -> HttpResponse:
        """The JSON answer to an error, with its status and headers, and the
        ``RateLimit`` header fields of ``request``'s key, if any."""
        response = to_response(error_response(exc, self.settings))
        if request is not None:
            self.with_rate_limit_fields(request, response)
        return response

    def _management_request(
        self, request: HttpRequest, caller: VerifiedKey, key_id: str | None
    ) -> ManagementRequest:
        return ManagementRequest(
            method=request.method or "GET",
            caller=caller,
            key_id=key_id,
            query=query_pairs(request),
            # At most one byte past the cap: enough for the core to refuse it. Under
            # ASGI, Django has already received the body: this read does not wait.
            body=request.read(self.settings.max_body_bytes + 1),
        )

    def serve_management(self, request: HttpRequest, key_id: str | None = None) -> HttpResponse:
        """Answer one ``/api-keys`` call with the sync manager."""
        try:
            caller = self.authenticate(request, self.management_scopes)
            management = self._management_request(request, caller, key_id)
            core = handle_management_sync(
                self.manager, management, self.settings, limiters=self.limiters
            )
        except APIKeysError as exc:
            return self.response_for(exc, request)
        response = to_response(core)
        self.with_rate_limit_fields(request, response)
        return response

    async def aserve_management(
        self, request: HttpRequest, key_id: str | None = None
    ) -> HttpResponse:
        """Answer one ``/api-keys`` call with the async manager."""
        try:
            manager = self.managers.async_for(request)
            if manager is None:
                serve = sync_to_async(self.serve_management, thread_sensitive=False)
                return await serve(request, key_id)
            caller = await self.aauthenticate(request, self.management_scopes)
            management = self._management_request(request, caller, key_id)
            core = await handle_management_async(
                manager, management, self.settings, limiters=self.limiters
            )
        except APIKeysError as exc:
            return self.response_for(exc, request)
        response = to_response(core)
        self.with_rate_limit_fields(request, response)
        return response

    def close(self) -> None:
        """Close the managers this instance built; they are rebuilt if used again.

        Managers passed in stay open. From async code, prefer :meth:`aclose`.
        """
        self.managers.close()

    async def aclose(self) -> None:
        """Close the managers this instance built, without blocking the event loop."""
        await self.managers.aclose()


_current: APIKeys | None = None
_current_lock = threading.Lock()


def _reset_current(*, setting: str, **kwargs: Any) -> None:
    """Forget the project's instance when ``settings.APIKEYS`` changes."""
    global _current
    if setting != SETTING_NAME:
        return
    with _current_lock:
        old, _current = _current, None
    if old is not None:
        old.close()


setting_changed.connect(_reset_current, dispatch_uid="apikeys.integrations.django")


__all__ = ["SETTING_NAME", "APIKeys", "query_pairs", "to_response"]
