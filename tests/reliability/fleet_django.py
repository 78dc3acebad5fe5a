"""The fleet tests' Django project, configured from the environment alone.

``settings.APIKEYS`` holds the integration settings of ``FLEET_SETTINGS`` and
names no backend, so the process-wide default manager is
built from ``APIKEYS_BACKEND`` (and ``APIKEYS_REDIS_URL``, ...). Served by
``gunicorn -w 4 tests.reliability.fleet_django:application``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path

from apikeys.integrations.django import management_router, require_api_key
from tests.reliability.fleet_apps import SPEND_COST, WORKER_HEADER, integration_options

settings.configure(
    DEBUG=False,
    SECRET_KEY="fleet-tests",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["apikeys.integrations.django"],
    DATABASES={},
    USE_TZ=True,
    MIDDLEWARE=[f"{__name__}.name_the_worker"],
    APIKEYS=integration_options(),
)


def name_the_worker(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., Any]:
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response[WORKER_HEADER] = str(os.getpid())
        return response

    return middleware


@require_api_key
def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid(), "key": request.api_key.id})  # type: ignore[attr-defined]


@require_api_key(cost=SPEND_COST)
def spend(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid(), "key": request.api_key.id})  # type: ignore[attr-defined]


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("whoami", whoami),
    path("spend", spend),
    path("health", health),
    path("", include(management_router)),
]

application = get_wsgi_application()
