"""``require_api_key``: protect one view, sync or ``async def``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast, overload

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest

from apikeys._errors import APIKeysError
from apikeys.integrations._authentication import (
    DEMAND_ATTRIBUTE,
    RouteDemand,
    required_scopes,
    route_cost,
)
from apikeys.integrations.django._extension import APIKeys

_View = TypeVar("_View", bound=Callable[..., Any])


@overload
def require_api_key(scopes: _View) -> _View: ...
@overload
def require_api_key(
    scopes: Iterable[str] | str = (), *, cost: int = 1
) -> Callable[[_View], _View]: ...
def require_api_key(scopes: Any = (), *, cost: int = 1) -> Any:
    """Decorate a view (sync or ``async def``) to require a key holding ``scopes``.

    Use it as ``@require_api_key(scopes=["read:data"])`` or bare
    ``@require_api_key``; the verified key is ``request.api_key``. Refusals are
    answered with the JSON error and the view never runs; an
    :class:`~apikeys.APIKeysError` the view raises (``RateLimitedError``,
    ``KeyNotFoundError``…) is answered the same way. The view is exempt from
    CSRF checks: a key travels in a header, which no other site can make a
    browser send. On a class-based view, use
    ``method_decorator(require_api_key(...), name="dispatch")``.

    ``cost`` is what a call spends from the key's rate limit and quota (1 to
    10**12), charged once per request: behind ``APIKeyMiddleware``, the
    middleware checks the scopes and charges the cost itself, so a call
    refused for a missing scope or by the key's limits charges nothing. Every
    answer carries the key's ``RateLimit`` header fields.

    Raises:
        ConfigurationError: A scope or the cost is malformed (when the view is declared).
    """
    if callable(scopes):
        return require_api_key()(scopes)
    needed = required_scopes(scopes)
    units = route_cost(cost)

    def decorate(view: _View) -> _View:
        wrapper: Any
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                keys = APIKeys.current()
                try:
                    await keys.aauthenticate(request, needed, units)
                    response = await view(request, *args, **kwargs)
                except APIKeysError as exc:
                    return keys.response_for(exc, request)
                keys.with_rate_limit_fields(request, response)
                return response

            wrapper = async_wrapper
        else:

            @functools.wraps(view)
            def sync_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                keys = APIKeys.current()
                try:
                    keys.authenticate(request, needed, units)
                    response = view(request, *args, **kwargs)
                except APIKeysError as exc:
                    return keys.response_for(exc, request)
                keys.with_rate_limit_fields(request, response)
                return response

            wrapper = sync_wrapper
        # What django.views.decorators.csrf.csrf_exempt sets; set directly because
        # Django 4.2's csrf_exempt turns an async view into a sync one.
        wrapper.csrf_exempt = True
        setattr(wrapper, DEMAND_ATTRIBUTE, RouteDemand(needed, units))  # for APIKeyMiddleware
        return cast(_View, wrapper)

    return decorate


__all__ = ["require_api_key"]
