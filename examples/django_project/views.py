"""The example's views: plain Django views and one Django REST framework view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from django.http import HttpRequest, JsonResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apikeys import VerifiedKey
from apikeys.integrations.django import require_api_key


def health(request: HttpRequest) -> JsonResponse:
    """Liveness probe: exempt, no key needed."""
    return JsonResponse({"status": "ok"})


@require_api_key
def protected(request: HttpRequest) -> JsonResponse:
    """The product docs' example: who called, and when."""
    return JsonResponse(
        {
            "message": "API key authentication successful",
            "user": request.api_key.user_id,  # type: ignore[attr-defined]
            "timestamp": datetime.now(UTC).isoformat(),
        }
    )


@require_api_key(scopes=["read:data"])
def data(request: HttpRequest) -> JsonResponse:
    """A view that needs the ``read:data`` scope."""
    return JsonResponse({"owner": request.api_key.user_id, "items": [1, 2, 3]})  # type: ignore[attr-defined]


@require_api_key(scopes=["read:data"])
async def async_data(request: HttpRequest) -> JsonResponse:
    """The same, as an ``async def`` view (served with the async manager under ASGI)."""
    return JsonResponse({"owner": request.api_key.user_id, "items": [1, 2, 3]})  # type: ignore[attr-defined]


def whoami(request: HttpRequest) -> JsonResponse:
    """Any view behind the middleware finds the verified key on ``request.api_key``."""
    key = request.api_key  # type: ignore[attr-defined]
    return JsonResponse({"user": key.user_id, "key": key.id, "scopes": list(key.scopes)})


class DataView(APIView):
    """Django REST framework: ``request.auth`` is the verified key."""

    required_scopes = ("read:data",)  # checked by HasAPIKeyScopes (the default permission)

    def get(self, request: Request) -> Response:
        key = cast(VerifiedKey, request.auth)  # set by APIKeyAuthentication
        return Response({"owner": key.user_id, "items": [1, 2, 3]})
