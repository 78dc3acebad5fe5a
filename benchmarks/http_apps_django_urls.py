"""URLs of the Django app in :mod:`benchmarks.http_apps`: ``/open`` and ``/protected``."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from apikeys.integrations.django import require_api_key
from benchmarks.http_apps import BODY


def open_route(_request: HttpRequest) -> JsonResponse:
    """No key needed."""
    return JsonResponse(BODY)


@require_api_key
def protected(_request: HttpRequest) -> JsonResponse:
    """A key needed; nothing else differs from :func:`open_route`."""
    return JsonResponse(BODY)


urlpatterns = [path("open", open_route), path("protected", protected)]
