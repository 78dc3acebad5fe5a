"""A Django project configured from the environment alone, for a real ASGI server.

``settings.APIKEYS`` names no backend, so apikeys serves it with the
process-wide default managers built from ``APIKEYS_BACKEND``: the sync one for
sync views and ``/sync/api-keys``, the async one for ``async def`` views and
``/async/api-keys``. Run: ``uvicorn tests.integrations.django_env_site:application``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from apikeys.integrations.django import (
    async_management_router,
    management_router,
    require_api_key,
)

settings.configure(
    DEBUG=False,
    SECRET_KEY="django-env-site-for-tests",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["apikeys.integrations.django"],
    DATABASES={},
    USE_TZ=True,
    MIDDLEWARE=[],
    APIKEYS={},  # no BACKEND: the defaults, configured by APIKEYS_BACKEND
)


@require_api_key
def sync_whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"user": request.api_key.user_id})  # type: ignore[attr-defined]


@require_api_key
async def async_whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"user": request.api_key.user_id})  # type: ignore[attr-defined]


urlpatterns = [
    path("sync/whoami", sync_whoami),
    path("async/whoami", async_whoami),
    path("sync/", include(management_router)),
    path("async/", include(async_management_router)),
]

application = get_asgi_application()
