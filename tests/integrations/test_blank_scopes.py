"""Blank required scopes fail when a route is declared, in every integration.

``None``, ``""``, ``" "`` or a blank scope in a list would otherwise require
no scope at all: a route meant to be scoped would let every valid key in. Only
an empty sequence means "no scope required".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from apikeys import ConfigurationError
from tests.integrations.conftest import Seeded
from tests.integrations.django_settings import configured

BLANK_TEXT = st.text(alphabet=" \t\n\r\x0b\x0c\x85\xa0\u2003\u3000", max_size=6)
BLANKS = st.one_of(
    st.none(),
    BLANK_TEXT,
    st.lists(BLANK_TEXT, min_size=1, max_size=3),
    st.lists(BLANK_TEXT, min_size=1, max_size=2).map(lambda blanks: ("read:data", *blanks)),
)


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    with configured():
        yield


def _flask_decorator(scopes: Any) -> object:
    from apikeys.integrations.flask import require_api_key

    return require_api_key(scopes)


def _flask_middleware(scopes: Any) -> object:
    from apikeys.integrations.flask import APIKeyMiddleware

    return APIKeyMiddleware(Flask(__name__), scopes=scopes)


def _starlette_decorator(scopes: Any) -> object:
    from apikeys.integrations.starlette import require_api_key

    return require_api_key(scopes)


def _starlette_middleware(scopes: Any) -> object:
    from apikeys.integrations.starlette import APIKeyMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    return APIKeyMiddleware(app, scopes=scopes)


def _fastapi_dependency(scopes: Any) -> object:
    from apikeys.integrations.fastapi import require_api_key

    return require_api_key(scopes)


def _django_decorator(scopes: Any) -> object:
    from apikeys.integrations.django import require_api_key

    return require_api_key(scopes)


def _django_middleware(scopes: Any) -> object:
    from django.http import HttpRequest, HttpResponse

    from apikeys.integrations.django import APIKeyMiddleware

    def get_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    middleware = type("ScopedMiddleware", (APIKeyMiddleware,), {"scopes": scopes})
    return middleware(get_response)


def _drf_require_scopes(scopes: Any) -> object:
    from apikeys.integrations.django.rest_framework import require_scopes

    return require_scopes(scopes)


def _drf_permission_subclass(scopes: Any) -> object:
    from apikeys.integrations.django.rest_framework import HasAPIKeyScopes

    return type("ScopedPermission", (HasAPIKeyScopes,), {"required_scopes": scopes})


DECLARATIONS: dict[str, Callable[[Any], object]] = {
    "flask-decorator": _flask_decorator,
    "flask-middleware": _flask_middleware,
    "starlette-decorator": _starlette_decorator,
    "starlette-middleware": _starlette_middleware,
    "fastapi-dependency": _fastapi_dependency,
    "django-decorator": _django_decorator,
    "django-middleware": _django_middleware,
    "drf-require-scopes": _drf_require_scopes,
    "drf-permission-subclass": _drf_permission_subclass,
}


@pytest.mark.parametrize("declare", DECLARATIONS.values(), ids=DECLARATIONS.keys())
@pytest.mark.parametrize("blank", [None, "", " ", "\t\n", [""], ["read:data", " "]])
def test_blank_scopes_are_a_configuration_error(
    declare: Callable[[Any], object], blank: object
) -> None:
    with pytest.raises(ConfigurationError, match="scope"):
        declare(blank)


@pytest.mark.parametrize("declare", DECLARATIONS.values(), ids=DECLARATIONS.keys())
def test_an_empty_sequence_and_a_scope_are_fine(declare: Callable[[Any], object]) -> None:
    declare(())
    declare([])
    declare(["read:data"])


@given(blank=BLANKS)
def test_any_blank_scopes_are_refused_when_declared(blank: object) -> None:
    for declare in DECLARATIONS.values():
        with pytest.raises(ConfigurationError):
            declare(blank)


@pytest.mark.parametrize("blank", [None, "", " "])
def test_a_drf_views_blank_required_scopes_fail_closed(blank: object, seeded: Seeded) -> None:
    """A view attribute is read per request: a blank one answers 500, never 'no scope'."""
    from django.test.utils import override_settings
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from apikeys.integrations.django import APIKeys
    from apikeys.integrations.django.rest_framework import APIKeyAuthentication, HasAPIKeyScopes

    class BlankScopesView(APIView):
        authentication_classes = (APIKeyAuthentication,)
        permission_classes = (HasAPIKeyScopes,)
        required_scopes = blank

        def get(self, request: Any) -> Response:
            return Response({"ran": True})

    request = APIRequestFactory().get("/blank", HTTP_AUTHORIZATION=f"Bearer {seeded.reader.secret}")
    with override_settings(APIKEYS={"BACKEND": seeded.url}):
        try:
            response = BlankScopesView.as_view()(request)
        finally:
            APIKeys.current().close()
    assert response.status_code == 500
    assert response.data["code"] == "configuration_error"
