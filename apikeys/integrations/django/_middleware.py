"""``APIKeyMiddleware``: a valid key on every request but exempt paths, sync or async."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import ClassVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, get_resolver

from apikeys._errors import APIKeysError
from apikeys.integrations._authentication import (
    ANY_ROUTE,
    RouteDemand,
    declared_demand,
    required_scopes,
)
from apikeys.integrations._settings import check_exempt_paths, is_exempt
from apikeys.integrations.django._extension import APIKeys

_GetResponse = Callable[[HttpRequest], "HttpResponseBase | Awaitable[HttpResponseBase]"]


def view_demand(request: HttpRequest) -> RouteDemand:
    """What the view that will answer ``request`` demands: what ``require_api_key``
    declared on it (or on a class-based view's ``dispatch``); nothing for any other view, or none.

    Read before the view runs, with the URLconf Django will route ``request`` by.
    """
    try:
        match = get_resolver(getattr(request, "urlconf", None)).resolve(request.path_info)
    except Resolver404:
        return ANY_ROUTE
    demand = declared_demand(match.func)
    if demand is ANY_ROUTE:
        demand = declared_demand(getattr(getattr(match.func, "view_class", None), "dispatch", None))
    return demand


class APIKeyMiddleware:
    """Require a valid key on every request but exempt paths; sets ``request.api_key``.

    Add ``"apikeys.integrations.django.APIKeyMiddleware"`` to ``MIDDLEWARE``.
    Exempt paths come from ``settings.APIKEYS["EXEMPT_PATHS"]`` (``/health``,
    ``/static/*``), matched against ``request.path_info``. It runs in whichever
    mode Django's handler is in: sync (WSGI), with the sync manager, or async
    (ASGI), with the async manager. An :class:`~apikeys.APIKeysError` raised
    by any view is answered with its JSON error too.

    To require scopes on every request, or fixed exempt paths, subclass it::

        class ReadMiddleware(APIKeyMiddleware):
            scopes = ["read:data"]
            exempt_paths = ["/health"]

    Attributes:
        scopes: Scopes every request must hold.
        exempt_paths: Paths let through without a key; ``None`` means the
            ``EXEMPT_PATHS`` setting.

    For a view decorated with ``require_api_key``, the key is validated here for
    the view's scopes too and charged the view's cost, in one validation, so that
    a request refused for a missing scope or by its key's limits charges nothing.
    """

    sync_capable: ClassVar[bool] = True
    async_capable: ClassVar[bool] = True
    scopes: ClassVar[Iterable[str] | str] = ()
    exempt_paths: ClassVar[Sequence[str] | None] = None

    def __init__(self, get_response: _GetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        # Checked once, when Django loads the middleware: a typo fails at startup.
        self.required_scopes = required_scopes(self.scopes)
        self.exempt = check_exempt_paths(self.exempt_paths)
        APIKeys.current()

    def _exempt(self, request: HttpRequest, keys: APIKeys) -> bool:
        exempt = self.exempt if self.exempt is not None else keys.settings.exempt_paths
        return is_exempt(request.path_info, exempt)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        keys = APIKeys.current()
        if not self._exempt(request, keys):
            demand = view_demand(request)
            try:
                keys.authenticate(request, demand.with_scopes(self.required_scopes), demand.cost)
            except APIKeysError as exc:
                return keys.response_for(exc, request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponseBase)  # sync mode: a response
        keys.with_rate_limit_fields(request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        keys = APIKeys.current()
        if not self._exempt(request, keys):
            demand = view_demand(request)
            scopes = demand.with_scopes(self.required_scopes)
            try:
                await keys.aauthenticate(request, scopes, demand.cost)
            except APIKeysError as exc:
                return keys.response_for(exc, request)
        pending = self.get_response(request)
        assert not isinstance(pending, HttpResponseBase)  # async mode: a coroutine
        response = await pending
        keys.with_rate_limit_fields(request, response)
        return response

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        """Answer an :class:`~apikeys.APIKeysError` raised by any view with its JSON error."""
        if isinstance(exception, APIKeysError):
            return APIKeys.current().response_for(exception, request)
        return None


class RateLimitFieldsMiddleware:
    """Add the ``RateLimit`` header fields of the request's key to every response.

    :class:`APIKeyMiddleware` and ``require_api_key`` add them themselves; this
    one is for views they do not wrap, Django REST framework's: add
    ``"apikeys.integrations.django.RateLimitFieldsMiddleware"`` to ``MIDDLEWARE``.
    It verifies nothing: a request no key was verified for is left alone.
    """

    sync_capable: ClassVar[bool] = True
    async_capable: ClassVar[bool] = True

    def __init__(self, get_response: _GetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponseBase)  # sync mode: a response
        APIKeys.with_rate_limit_fields(request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        pending = self.get_response(request)
        assert not isinstance(pending, HttpResponseBase)  # async mode: a coroutine
        response = await pending
        APIKeys.with_rate_limit_fields(request, response)
        return response


__all__ = ["APIKeyMiddleware", "RateLimitFieldsMiddleware"]
