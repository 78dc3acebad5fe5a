"""Django REST framework: ``APIKeyAuthentication``, ``HasAPIKeyScopes`` and the
exception handler, through DRF's own ``APIClient``, answering exactly like the
plain Django decorator (same statuses, bodies and headers)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest
from django.test.utils import override_settings
from django.urls import path

import apikeys
from apikeys import ConfigurationError, KeyManager, KeyNotFoundError, VerifiedKey
from apikeys.integrations._settings import IntegrationSettings
from tests.integrations.conftest import OWNER, Seeded
from tests.integrations.contract import AppOptions, Reply, bearer
from tests.integrations.django_settings import (
    BASE_SETTINGS,
    SyncURLConf,
    apikeys_setting,
    configured,
    reply_of,
)
from tests.integrations.django_settings import (
    seeded_copy_fixture as seeded_copy_fixture,  # overrides conftest's seeded
)
from tests.integrations.django_settings import (
    seeded_template_fixture as seeded_template_fixture,
)

pytestmark = pytest.mark.django


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    with configured():
        yield


class DRFURLConf:
    """DRF views, plus the demo app's plain Django views to compare with.

    Built on first use: DRF's view classes read ``settings.REST_FRAMEWORK``
    when they are defined, so only once Django is configured.
    """

    urlpatterns: ClassVar[list[Any]] = []

    @classmethod
    def build(cls) -> type[DRFURLConf]:
        if cls.urlpatterns:
            return cls
        from rest_framework.permissions import BasePermission, IsAuthenticated
        from rest_framework.request import Request
        from rest_framework.response import Response
        from rest_framework.views import APIView

        from apikeys.integrations.django.rest_framework import (
            APIKeyAuthentication,
            HasAPIKeyScopes,
            require_scopes,
        )

        class KeyView(APIView):
            authentication_classes = (APIKeyAuthentication,)
            permission_classes: tuple[type[BasePermission], ...] = (HasAPIKeyScopes,)

            def get(self, request: Request) -> Response:
                key = request.auth
                assert isinstance(key, VerifiedKey)
                return Response(
                    {
                        "user": key.user_id,
                        "userPk": request.user.pk,
                        "userText": str(request.user),
                        "authenticated": request.user.is_authenticated,
                        "published": request.api_key is key,  # type: ignore[attr-defined]
                    }
                )

            def post(self, request: Request) -> Response:
                return Response({"posted": True}, status=201)

        class ScopedView(KeyView):
            permission_classes = (require_scopes("read:data"),)

        class AdminView(KeyView):
            permission_classes = (require_scopes(["admin:write"]),)

        class ViewScopesView(KeyView):
            required_scopes = ("admin:write",)

        class IsAuthenticatedView(KeyView):
            permission_classes = (IsAuthenticated,)

        class RaisingView(KeyView):
            def get(self, request: Request) -> Response:
                raise KeyNotFoundError()

        class CostlyView(KeyView):
            permission_classes = (require_scopes("read:data", cost=5),)

        cls.urlpatterns = [
            *SyncURLConf.urlpatterns,
            path("drf/key", KeyView.as_view()),
            path("drf/scoped", ScopedView.as_view()),
            path("drf/admin", AdminView.as_view()),
            path("drf/view-scopes", ViewScopesView.as_view()),
            path("drf/is-authenticated", IsAuthenticatedView.as_view()),
            path("drf/raising", RaisingView.as_view()),
            path("drf/costly", CostlyView.as_view()),
        ]
        return cls


@contextmanager
def drf_client(url: str, options: AppOptions, **changes: Any) -> Iterator[Callable[..., Reply]]:
    """``get(path, **headers)`` through DRF's ``APIClient``, under ``override_settings``."""
    from rest_framework.test import APIClient

    from apikeys.integrations.django import APIKeys

    overrides = {
        "APIKEYS": apikeys_setting(url, options),
        "ROOT_URLCONF": DRFURLConf.build(),
        **changes,
    }
    with override_settings(**overrides):
        client = APIClient()

        def get(path: str, **headers: str) -> Reply:
            return reply_of(client.get(path, headers=headers))

        try:
            yield get
        finally:
            APIKeys.current().close()


@pytest.fixture
def drf(seeded: Seeded) -> Iterator[Callable[..., Reply]]:
    with drf_client(seeded.url, AppOptions()) as get:
        yield get


def test_a_valid_key_authenticates_as_its_owner(drf: Callable[..., Reply], seeded: Seeded) -> None:
    reply = drf("/drf/key", **bearer(seeded.reader.secret))
    assert reply.status == 200
    assert reply.json == {
        "user": OWNER,
        "userPk": OWNER,
        "userText": OWNER,
        "authenticated": True,
        "published": True,
    }


def test_keys_a_leaked_key_minted_die_with_it(seeded: Seeded) -> None:
    from rest_framework.test import APIClient

    from apikeys.integrations.django import APIKeys

    overrides = {
        "APIKEYS": apikeys_setting(seeded.url, AppOptions()),
        "ROOT_URLCONF": DRFURLConf.build(),
    }
    with override_settings(**overrides):
        client = APIClient()
        try:
            leaked = client.post(
                "/api-keys",
                {"name": "leaked", "scopes": ["read:data", "keys:*"]},
                format="json",
                headers=bearer(seeded.admin.secret),
            ).json()
            child = client.post(
                "/api-keys",
                {"name": "minted", "scopes": ["read:data"]},
                format="json",
                headers=bearer(leaked["secret"]),
            )
            assert child.status_code == 201
            assert child.json()["createdBy"] == leaked["id"]
            minted = bearer(child.json()["secret"])
            assert client.get("/drf/scoped", headers=minted).status_code == 200
            ended = client.delete(f"/api-keys/{leaked['id']}", headers=bearer(seeded.admin.secret))
            assert ended.status_code == 200
            refused = client.get("/drf/scoped", headers=minted)
            assert refused.status_code == 403
            assert refused.json()["code"] == "revoked_api_key"
        finally:
            APIKeys.current().close()


def test_x_api_key_header_works_too(drf: Callable[..., Reply], seeded: Seeded) -> None:
    assert drf("/drf/scoped", **{"X-API-Key": seeded.reader.secret}).status == 200


REFUSALS: list[tuple[str, Callable[[Seeded], dict[str, str]]]] = [
    ("/drf/key", lambda s: {}),
    ("/drf/key", lambda s: bearer("apk_1garbage")),
    ("/drf/key", lambda s: bearer(s.revoked.secret)),
    ("/drf/key", lambda s: bearer(s.expired.secret)),
    ("/drf/key", lambda s: {**bearer(s.admin.secret), "X-API-Key": s.reader.secret}),
    ("/drf/admin", lambda s: bearer(s.admin.secret)),
    ("/drf/view-scopes", lambda s: bearer(s.reader.secret)),
]
# The plain Django view that makes the same demand, to compare answers with.
_DJANGO_TWIN = {"/drf/key": "/protected-sync", "/drf/admin": "/admin", "/drf/view-scopes": "/admin"}


@pytest.mark.parametrize("invalid_key_status", [403, 401])
@pytest.mark.parametrize(
    ("path", "headers_for"),
    REFUSALS,
    ids=["no-key", "malformed", "revoked", "expired", "two-keys", "scope", "view-scope"],
)
def test_refusals_match_the_plain_django_answers(
    seeded: Seeded,
    invalid_key_status: int,
    path: str,
    headers_for: Callable[[Seeded], dict[str, str]],
) -> None:
    options = AppOptions(settings=IntegrationSettings(invalid_key_status=invalid_key_status))  # type: ignore[arg-type]
    headers = headers_for(seeded)
    with drf_client(seeded.url, options) as get:
        drf_reply = get(path, **headers)
        django_reply = get(_DJANGO_TWIN[path], **headers)
    assert drf_reply.status in (401, 403)
    assert drf_reply.status == django_reply.status
    assert drf_reply.json == django_reply.json
    for header in ("www-authenticate", "retry-after"):
        assert drf_reply.headers.get(header) == django_reply.headers.get(header), header
    assert "detail" not in drf_reply.json  # the apikeys body, not DRF's default one


def test_no_key_is_401_with_the_bearer_challenge(drf: Callable[..., Reply]) -> None:
    reply = drf("/drf/scoped")
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="api"'
    assert reply.json == {"code": "missing_api_key", "message": "An API key is required"}


def test_missing_scope_names_it(drf: Callable[..., Reply], seeded: Seeded) -> None:
    reply = drf("/drf/admin", **bearer(seeded.reader.secret))
    assert reply.status == 403
    assert reply.json["code"] == "insufficient_scope"
    assert reply.json["missingScopes"] == ["admin:write"]
    assert 'error="insufficient_scope"' in reply.headers["www-authenticate"]


def test_query_string_key_is_refused_saying_why(drf: Callable[..., Reply], seeded: Seeded) -> None:
    reply = drf(f"/drf/key?api_key={seeded.admin.secret}")
    assert reply.status == 401
    assert "query string" in reply.json["message"]
    assert seeded.admin.secret not in reply.text


def test_is_authenticated_alone_still_answers_401_with_the_challenge(
    drf: Callable[..., Reply], seeded: Seeded
) -> None:
    # DRF's own permission: DRF's own body, but authenticate_header makes it a 401.
    anonymous = drf("/drf/is-authenticated")
    assert anonymous.status == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="api"'
    assert drf("/drf/is-authenticated", **bearer(seeded.admin.secret)).status == 200
    refused = drf("/drf/is-authenticated", **bearer(seeded.revoked.secret))
    assert refused.status == 403
    assert refused.json["code"] == "revoked_api_key"


def test_backend_unavailable_is_503_with_retry_after(
    seeded: Seeded, unavailable_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="apikeys"),
        drf_client(unavailable_url, AppOptions()) as get,
    ):
        reply = get("/drf/key", **bearer(seeded.admin.secret))
    assert reply.status == 503
    logged = [r for r in caplog.records if "BackendUnavailableError" in r.getMessage()]
    assert len(logged) == 1  # one failure, one record
    assert reply.json["code"] == "backend_unavailable"
    assert reply.json["message"] == "API key backend is unavailable"
    assert isinstance(reply.json["retryAfter"], int)
    assert reply.headers["retry-after"] == str(reply.json["retryAfter"])
    assert unavailable_url not in reply.text


def test_exception_handler_answers_errors_raised_in_views(seeded: Seeded) -> None:
    with drf_client(seeded.url, AppOptions()) as get, pytest.raises(KeyNotFoundError):
        get("/drf/raising", **bearer(seeded.admin.secret))  # DRF's default handler ignores it
    rest_framework = {
        **BASE_SETTINGS["REST_FRAMEWORK"],
        "EXCEPTION_HANDLER": "apikeys.integrations.django.rest_framework.exception_handler",
    }
    with drf_client(seeded.url, AppOptions(), REST_FRAMEWORK=rest_framework) as get:
        reply = get("/drf/raising", **bearer(seeded.admin.secret))
        refused = get("/drf/key")
    assert reply.status == 404
    assert reply.json == {"code": "api_key_not_found", "message": "API key not found"}
    assert refused.status == 401  # other DRF errors pass through as before
    assert refused.json["code"] == "missing_api_key"


class CountingManager:
    """A real manager that counts how often a key is validated (a spy, not a fake)."""

    def __init__(self, inner: KeyManager) -> None:
        self.inner = inner
        self.validations = 0

    def validate_api_key(
        self, secret: str, *, required_scopes: Any = (), cost: int = 1
    ) -> VerifiedKey:
        self.validations += 1
        return self.inner.validate_api_key(secret, required_scopes=required_scopes, cost=cost)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("middleware", [False, True], ids=["drf-only", "with-middleware"])
def test_a_key_is_validated_once_per_request(seeded: Seeded, middleware: bool) -> None:
    counting = CountingManager(apikeys.create_key_manager(seeded.url, cache_ttl=0))
    apikeys.configure(counting)
    changes: dict[str, Any] = {"APIKEYS": {}}  # no backend: the default manager
    if middleware:
        changes["MIDDLEWARE"] = ["apikeys.integrations.django.APIKeyMiddleware"]
    try:
        with drf_client(seeded.url, AppOptions(), **changes) as get:
            reply = get("/drf/scoped", **bearer(seeded.reader.secret))
    finally:
        apikeys.configure()
        counting.inner.close()
    assert reply.status == 200
    assert reply.json["published"] is True
    assert counting.validations == 1


def test_post_needs_no_csrf_token(drf: Callable[..., Reply], seeded: Seeded) -> None:
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    response = client.post("/drf/key", headers=bearer(seeded.admin.secret))
    assert response.status_code == 201


def test_require_scopes_is_checked_when_declared() -> None:
    from apikeys.integrations.django.rest_framework import HasAPIKeyScopes, require_scopes

    with pytest.raises(ConfigurationError):
        require_scopes("bad scope!")
    with pytest.raises(ConfigurationError):
        require_scopes("data:*")
    permission = require_scopes("read:data", ["keys:read", "keys:write"])
    assert issubclass(permission, HasAPIKeyScopes)
    assert permission.required_scopes == ("read:data", "keys:read", "keys:write")


def test_api_key_user() -> None:
    from apikeys.integrations.django.rest_framework import APIKeyUser

    key = VerifiedKey(id="k1", user_id="user_1", name="ci", scopes=("read:data",))
    user = APIKeyUser(key)
    assert (user.pk, user.id, user.get_username(), str(user)) == ("user_1",) * 4
    assert user.is_authenticated and not user.is_anonymous
    assert user == APIKeyUser(key.model_copy(update={"id": "k2"}))
    assert hash(user) == hash("user_1")
    assert "k1" in repr(user)


@pytest.mark.parametrize("management_scope", ["default", None], ids=["default", "open"])
def test_api_keys_in_a_drf_project_needs_the_management_scope(
    seeded: Seeded, management_scope: str | None
) -> None:
    # A DRF project mounts Django's /api-keys views; DRF's authentication by API
    # key on every view must not open them to keys without keys:manage.
    from rest_framework.test import APIClient

    settings = (
        IntegrationSettings() if management_scope else IntegrationSettings(management_scope=None)
    )
    rest_framework = {
        **BASE_SETTINGS["REST_FRAMEWORK"],
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "apikeys.integrations.django.rest_framework.APIKeyAuthentication"
        ],
        "DEFAULT_PERMISSION_CLASSES": [
            "apikeys.integrations.django.rest_framework.HasAPIKeyScopes"
        ],
    }
    before = seeded.count_keys()
    with drf_client(seeded.url, AppOptions(settings=settings), REST_FRAMEWORK=rest_framework):
        client = APIClient()
        reader = bearer(seeded.reader.secret)
        replies = [
            reply_of(client.get("/api-keys", headers=reader)),
            reply_of(client.post("/api-keys", {"name": "minted"}, format="json", headers=reader)),
            reply_of(client.delete(f"/api-keys/{seeded.admin.id}", headers=reader)),
        ]
        manager_reply = reply_of(client.get("/api-keys", headers=bearer(seeded.admin.secret)))
    if management_scope is None:
        assert [reply.status for reply in replies] == [200, 201, 200]
        return
    for reply in replies:
        assert reply.status == 403
        assert reply.json["code"] == "insufficient_scope"
        assert reply.json["missingScopes"] == ["keys:manage"]
        assert reply.headers["www-authenticate"] == (
            'Bearer realm="api", error="insufficient_scope", scope="keys:manage"'
        )
    assert seeded.count_keys() == before
    assert manager_reply.status == 200  # keys:* covers keys:manage


@pytest.mark.parametrize(
    "middleware",
    ["RateLimitFieldsMiddleware", "APIKeyMiddleware"],
)
def test_a_views_cost_is_charged_once_with_the_ratelimit_fields(
    seeded: Seeded, middleware: str
) -> None:
    manager = apikeys.create_key_manager(seeded.url)
    try:
        secret = manager.create_api_key(
            OWNER, "limited", ["read:data"], quota=apikeys.Quota(limit=12)
        ).secret
    finally:
        manager.close()
    changes = {"MIDDLEWARE": [f"apikeys.integrations.django.{middleware}"]}
    with drf_client(seeded.url, AppOptions(), **changes) as get:
        replies = [get("/drf/costly", **bearer(secret)) for _ in range(3)]
        cheap = get("/drf/key", **bearer(secret))
    assert [reply.status for reply in replies] == [200, 200, 429]
    assert replies[0].headers["ratelimit-policy"] == '"quota";q=12'
    assert [reply.headers["ratelimit"] for reply in replies] == [
        '"quota";r=7',
        '"quota";r=2',
        '"quota";r=0',
    ]
    assert replies[2].json["code"] == "quota_exceeded"
    # Behind APIKeyMiddleware the refused call kept the middleware's unit.
    left = 1 if middleware == "RateLimitFieldsMiddleware" else 0
    assert cheap.headers["ratelimit"] == f'"quota";r={left}'


def test_a_permission_cost_is_checked_when_declared() -> None:
    from apikeys.integrations.django.rest_framework import require_scopes

    with pytest.raises(apikeys.ConfigurationError, match="invalid route cost"):
        require_scopes("read:data", cost=0)
