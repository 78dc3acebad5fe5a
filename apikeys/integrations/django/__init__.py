"""API-key authentication for Django: settings, a middleware, a view decorator and ``/api-keys``.

Example ``settings.py``::

    APIKEYS = {"BACKEND": "sqlite:///keys.db", "EXEMPT_PATHS": ["/health"]}
    MIDDLEWARE = [..., "apikeys.integrations.django.APIKeyMiddleware"]

``urls.py``::

    from django.urls import include, path
    from apikeys.integrations.django import management_router, require_api_key

    @require_api_key(scopes=["read:data"])
    def protected(request):
        return JsonResponse({"user": request.api_key.user_id})

    urlpatterns = [path("protected", protected), path("", include(management_router))]

The verified key is ``request.api_key``. Sync views use the sync manager,
``async def`` views the async one. Django REST framework classes are in
:mod:`apikeys.integrations.django.rest_framework`.
"""

from __future__ import annotations

from apikeys._errors import MissingDependencyError
from apikeys.integrations._settings import IntegrationSettings

try:
    import django  # noqa: F401 (the import guard)
except ImportError as exc:
    raise MissingDependencyError("django", "django") from exc

# The adapter's modules, which import Django: imported once Django is known to be there.
from apikeys.integrations.django._decorators import require_api_key
from apikeys.integrations.django._extension import APIKeys, to_response
from apikeys.integrations.django._middleware import APIKeyMiddleware, RateLimitFieldsMiddleware
from apikeys.integrations.django.urls import async_management_router, management_router

__all__ = [
    "APIKeyMiddleware",
    "APIKeys",
    "IntegrationSettings",
    "RateLimitFieldsMiddleware",
    "async_management_router",
    "management_router",
    "require_api_key",
    "to_response",
]
