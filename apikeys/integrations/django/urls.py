"""The ``/api-keys`` endpoints as URL patterns.

``path("", include(management_router))`` (or
``include("apikeys.integrations.django.urls")``) mounts sync views, served
with the sync manager under WSGI and ASGI alike; ASGI projects may mount
``async_management_router`` instead, served with the async manager.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from apikeys.integrations._management import MANAGEMENT_PATH
from apikeys.integrations.django._extension import APIKeys

_ROUTE = MANAGEMENT_PATH.lstrip("/")


def management_view(request: HttpRequest, key_id: str | None = None) -> HttpResponse:
    """``GET``/``POST``/``DELETE /api-keys`` and ``DELETE /api-keys/{id}``, sync."""
    return APIKeys.current().serve_management(request, key_id)


async def async_management_view(request: HttpRequest, key_id: str | None = None) -> HttpResponse:
    """The async twin of :func:`management_view`."""
    return await APIKeys.current().aserve_management(request, key_id)


# Keys travel in headers, which no other site can make a browser send: no CSRF token.
management_view.csrf_exempt = True  # type: ignore[attr-defined]
async_management_view.csrf_exempt = True  # type: ignore[attr-defined]

management_router: list[URLPattern] = [
    path(_ROUTE, management_view, name="apikeys-list"),
    path(_ROUTE + "/<str:key_id>", management_view, name="apikeys-detail"),
]
"""The sync ``/api-keys`` URL patterns: ``path("", include(management_router))``."""

async_management_router: list[URLPattern] = [
    path(_ROUTE, async_management_view, name="apikeys-list"),
    path(_ROUTE + "/<str:key_id>", async_management_view, name="apikeys-detail"),
]
"""The same patterns with async views, for ASGI deployments."""

urlpatterns = management_router

__all__ = [
    "async_management_router",
    "async_management_view",
    "management_router",
    "management_view",
    "urlpatterns",
]
