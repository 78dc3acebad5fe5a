"""Django for the tests: settings configured once, and the contract's demo app.

Django's settings are process-wide and can be configured only once, so
:func:`configured` configures them for the duration of a test module and then
puts them back as they were (unconfigured), so nothing leaks into other test
modules. Each demo app then runs under ``override_settings``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlencode

import django
import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.test import AsyncClient
from django.test import Client as SyncClient
from django.test.utils import override_settings
from django.urls import include, path
from django.utils.decorators import method_decorator
from django.utils.functional import empty
from django.views import View

from apikeys import RateLimitedError
from apikeys.integrations.django import (
    APIKeyMiddleware,
    APIKeys,
    async_management_router,
    management_router,
    require_api_key,
)
from tests.integrations.apps import product_docs_body
from tests.integrations.conftest import Seeded, seed
from tests.integrations.contract import AppOptions, Client, Reply, apply_clock

T = TypeVar("T")

EXEMPT_PATHS = ("/health", "/public/*")

BASE_SETTINGS: dict[str, Any] = {
    "DEBUG": False,
    "SECRET_KEY": "only-for-the-apikeys-tests",
    "ALLOWED_HOSTS": ["testserver", "127.0.0.1", "localhost"],
    "INSTALLED_APPS": ["rest_framework"],
    "DATABASES": {},
    "MIDDLEWARE": [],
    "ROOT_URLCONF": "tests.integrations.django_settings",
    "USE_TZ": True,
    # No django.contrib.auth: requests without a user stay with request.user = None.
    "REST_FRAMEWORK": {
        "UNAUTHENTICATED_USER": None,
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    },
}


@contextmanager
def configured() -> Iterator[None]:
    """Configure Django for the tests inside, then leave the settings as they were."""
    if settings.configured:
        yield  # someone else configured Django: use it as it is
        return
    settings.configure(**BASE_SETTINGS)
    django.setup()
    try:
        yield
    finally:
        settings._wrapped = empty


# --- the contract's demo app -------------------------------------------------------------


def _key_user(request: HttpRequest) -> str:
    return str(request.api_key.user_id)  # type: ignore[attr-defined]


@require_api_key
async def protected(request: HttpRequest) -> JsonResponse:
    return JsonResponse(product_docs_body(request.api_key))  # type: ignore[attr-defined]


@require_api_key()
def protected_sync(request: HttpRequest) -> JsonResponse:
    return JsonResponse(product_docs_body(request.api_key))  # type: ignore[attr-defined]


@require_api_key(scopes=["read:data"])
def scoped(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"user": _key_user(request)})


@require_api_key(scopes="admin:write")
async def admin(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"user": _key_user(request)})


@require_api_key
def rate_limited(request: HttpRequest) -> JsonResponse:
    raise RateLimitedError("slow down", retry_after=7)


@require_api_key(cost=5)
def costly(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"user": _key_user(request)})


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def public_info(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"info": "public"})


async def whoami(request: HttpRequest) -> JsonResponse:
    key = getattr(request, "api_key", None)
    return JsonResponse({"user": key.user_id if key else None})


def unguarded_rate_limited(request: HttpRequest) -> JsonResponse:
    """No decorator: only the middleware's ``process_exception`` can answer this error."""
    raise RateLimitedError("slow down", retry_after=3)


@method_decorator(require_api_key(scopes=["read:data"]), name="dispatch")
class ClassBasedView(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"user": _key_user(request)})


class AsyncClassBasedView(View):
    @method_decorator(require_api_key(scopes=["read:data"]))
    async def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"user": _key_user(request)})


_ROUTES = [
    path("class-based", ClassBasedView.as_view()),
    path("async-class-based", AsyncClassBasedView.as_view()),
    path("protected", protected),
    path("protected-sync", protected_sync),
    path("scoped", scoped),
    path("admin", admin),
    path("rate-limited", rate_limited),
    path("costly", costly),
    path("health", health),
    path("public/info", public_info),
    path("whoami", whoami),
    path("unguarded-rate-limited", unguarded_rate_limited),
]


class SyncURLConf:
    """The demo app with the sync ``/api-keys`` views."""

    urlpatterns: ClassVar[list[Any]] = [*_ROUTES, path("", include(management_router))]


class AsyncURLConf:
    """The demo app with the async ``/api-keys`` views."""

    urlpatterns: ClassVar[list[Any]] = [*_ROUTES, path("", include(async_management_router))]


urlpatterns = SyncURLConf.urlpatterns


class KeysReadMiddleware(APIKeyMiddleware):
    """The middleware with scopes and exempt paths of its own, as a subclass sets them."""

    scopes = ("keys:read",)
    exempt_paths = EXEMPT_PATHS


def apikeys_setting(url: str, options: AppOptions) -> dict[str, Any]:
    """``settings.APIKEYS`` for the demo app: the backend plus the options' settings."""
    setting: dict[str, Any] = {"BACKEND": url}
    for name, value in options.settings.model_dump(exclude_defaults=True).items():
        setting[name.upper()] = value
    if options.middleware and not options.middleware_scopes:
        setting["EXEMPT_PATHS"] = list(EXEMPT_PATHS)
    return setting


def middleware_for(options: AppOptions) -> list[str]:
    if not options.middleware:
        return []
    if options.middleware_scopes:
        assert options.middleware_scopes == KeysReadMiddleware.scopes
        return ["tests.integrations.django_settings.KeysReadMiddleware"]
    return ["apikeys.integrations.django.APIKeyMiddleware"]


# --- clients ----------------------------------------------------------------------------


class EventLoopThread:
    """One event loop in a thread of its own, for the lifetime of an async client.

    The contract's client is synchronous; running every request of a client on
    the same loop (as an ASGI server does) keeps the async manager in use.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout=60)

    def close(self) -> None:
        self.run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def reply_of(response: HttpResponseBase) -> Reply:
    content = getattr(response, "content", b"")
    return Reply(
        response.status_code,
        {name.lower(): value for name, value in response.headers.items()},
        content.decode("utf-8", errors="replace"),
    )


class DjangoClient:
    """The contract's :class:`Client` over Django's ``Client`` or ``AsyncClient``."""

    def __init__(self, send: Callable[..., HttpResponseBase]) -> None:
        self._send = send

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> Reply:
        plain_headers = dict(headers or {})
        content_type = "application/octet-stream"
        for name in list(plain_headers):
            if name.lower() == "content-type":
                content_type = plain_headers.pop(name)
        target = f"{path}?{urlencode(params)}" if params else path
        response = self._send(
            method, target, data=content or b"", content_type=content_type, headers=plain_headers
        )
        return reply_of(response)


@contextmanager
def django_client(
    url: str, options: AppOptions, *, asynchronous: bool, **overrides: Any
) -> Iterator[Client]:
    """The demo app under ``override_settings``, with a sync or an async test client.

    The managers the app built are closed before the settings are put back.
    """
    changes: dict[str, Any] = {
        "APIKEYS": apikeys_setting(url, options),
        "MIDDLEWARE": middleware_for(options),
        "ROOT_URLCONF": AsyncURLConf if asynchronous else SyncURLConf,
        **overrides,
    }
    with override_settings(**changes):
        apply_clock(APIKeys.current().limiters, options)
        if not asynchronous:
            try:
                yield DjangoClient(SyncClient().generic)
            finally:
                APIKeys.current().close()
            return
        loop = EventLoopThread()
        async_client = AsyncClient()

        def send(*args: Any, **kwargs: Any) -> HttpResponseBase:
            return loop.run(async_client.generic(*args, **kwargs))

        try:
            yield DjangoClient(send)
        finally:
            try:
                loop.run(APIKeys.current().aclose())
            finally:
                loop.close()


# --- a seeded database per test, copied from one seeded per module --------------------------


@pytest.fixture(scope="module", name="seeded_template")
def seeded_template_fixture(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """The standard keys, seeded once per module (seeding costs argon2 hashes)."""
    return seed(f"sqlite:///{tmp_path_factory.mktemp('django-seed') / 'keys.db'}")


@pytest.fixture(name="seeded")
def seeded_copy_fixture(seeded_template: Seeded, db_url: str, tmp_path: Path) -> Seeded:
    """Overrides ``conftest.seeded``: a fresh copy of the module's seeded database."""
    template = Path(seeded_template.url.removeprefix("sqlite:///"))
    target = Path(db_url.removeprefix("sqlite:///"))
    shutil.copyfile(template, target)
    return dataclasses.replace(seeded_template, url=db_url)
