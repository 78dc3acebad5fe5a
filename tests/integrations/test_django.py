"""The Django integration: the shared contract with Django's sync and async test
clients, plus what only Django has (settings, the two middleware modes, CSRF,
async views under WSGI) and the example project in a real WSGI server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import pytest
from django.http import HttpRequest, JsonResponse
from django.urls import path as route
from django.utils.decorators import method_decorator
from django.views import View
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import apikeys
from apikeys import ConfigurationError
from apikeys.integrations._settings import IntegrationSettings
from apikeys.integrations.django import require_api_key
from tests.integrations.conftest import OWNER, Seeded
from tests.integrations.contract import (
    AppOptions,
    Client,
    ClientFactory,
    IntegrationContract,
    as_json,
    assert_a_refused_costly_call_charges_nothing,
    bearer,
)
from tests.integrations.django_settings import (
    SyncURLConf,
    configured,
    django_client,
)
from tests.integrations.django_settings import (
    seeded_copy_fixture as seeded_copy_fixture,  # overrides conftest's seeded
)
from tests.integrations.django_settings import (
    seeded_template_fixture as seeded_template_fixture,
)
from tests.integrations.servers import running_server, uvicorn_command, waitress_command

pytestmark = pytest.mark.django


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    with configured():
        yield


class TestDjangoSyncContract(IntegrationContract):
    """Django's ``Client``: the WSGI handler, the middleware in sync mode, sync ``/api-keys``."""

    @pytest.fixture
    def make_client(self) -> ClientFactory:
        return lambda url, options: django_client(url, options, asynchronous=False)


class TestDjangoAsyncContract(IntegrationContract):
    """Django's ``AsyncClient``: the ASGI handler, the middleware in async mode, async ``/api-keys``."""

    @pytest.fixture
    def make_client(self) -> ClientFactory:
        return lambda url, options: django_client(url, options, asynchronous=True)


# --- which manager serves which view -------------------------------------------------------


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[object]]:
    """The managers the Django integration builds from here on, sync and async."""
    from apikeys.integrations.django import _managers

    managers: dict[str, list[object]] = {"sync": [], "async": []}

    def recording(kind: str, factory: Callable[..., Any]) -> Callable[..., Any]:
        def build(*args: Any, **kwargs: Any) -> Any:
            managers[kind].append(manager := factory(*args, **kwargs))
            return manager

        return build

    monkeypatch.setattr(
        _managers, "create_key_manager", recording("sync", apikeys.create_key_manager)
    )
    monkeypatch.setattr(
        _managers,
        "create_async_key_manager",
        recording("async", apikeys.create_async_key_manager),
    )
    return managers


def test_async_views_use_the_async_manager_and_sync_views_the_sync_one(
    seeded: Seeded, built: dict[str, list[object]]
) -> None:
    with django_client(seeded.url, AppOptions(), asynchronous=True) as client:
        assert (
            client.request("GET", "/protected", headers=bearer(seeded.admin.secret)).status == 200
        )
        assert len(built["async"]) == 1
        assert built["sync"] == []  # the async view never touched the sync manager
        listing = client.request("GET", "/api-keys", headers=bearer(seeded.admin.secret))
        assert listing.status == 200
        assert built["sync"] == []  # nor did the async /api-keys views
        synced = client.request("GET", "/protected-sync", headers=bearer(seeded.reader.secret))
        assert synced.status == 200
        assert len(built["sync"]) == 1  # a sync view, run in a worker thread


def test_async_views_under_wsgi_use_the_sync_manager(
    seeded: Seeded, built: dict[str, list[object]]
) -> None:
    # Under WSGI Django runs each async view in a throwaway event loop: pooling
    # connections there would leave them dead, so the sync manager serves them.
    with django_client(seeded.url, AppOptions(), asynchronous=False) as client:
        for _ in range(3):
            good = client.request("GET", "/protected", headers=bearer(seeded.admin.secret))
            assert good.status == 200
            assert good.json["user"] == OWNER
            refused = client.request("GET", "/admin", headers=bearer(seeded.revoked.secret))
            assert refused.status == 403
            assert refused.json["code"] == "revoked_api_key"
        assert len(built["sync"]) == 1
        assert built["async"] == []


def test_an_async_manager_serves_only_its_own_event_loop(
    seeded: Seeded, built: dict[str, list[object]]
) -> None:
    import asyncio

    from django.test import AsyncRequestFactory

    from apikeys.integrations.django import APIKeys

    keys = APIKeys(backend=seeded.url)

    async def verify() -> str:
        request = AsyncRequestFactory().get("/", headers=bearer(seeded.admin.secret))
        return (await keys.aauthenticate(request)).user_id

    try:
        assert asyncio.run(verify()) == OWNER
        assert len(built["async"]) == 1
        assert built["sync"] == []
        assert asyncio.run(verify()) == OWNER  # another loop: the sync manager, in a thread
        assert len(built["async"]) == 1  # the first loop's manager was not replaced
        assert len(built["sync"]) == 1
    finally:
        keys.close()  # the first loop is gone: closes the async manager in a fresh one
    # Both were let go: used again, each is built anew.
    try:
        assert keys.manager is not built["sync"][0]
        assert asyncio.run(verify()) == OWNER
        assert len(built["async"]) == 2
    finally:
        keys.close()


def test_sync_and_async_managers_share_one_verification_cache(seeded: Seeded) -> None:
    # Under ASGI the async middleware verifies with the async manager while a sync
    # /api-keys view revokes with the sync one: a revocation must take effect at once.
    import asyncio

    from asgiref.sync import sync_to_async
    from django.test import AsyncRequestFactory

    from apikeys.integrations.django import APIKeys

    keys = APIKeys(backend=seeded.url)  # the default cache_ttl: 10 seconds

    async def verify() -> apikeys.VerifiedKey:
        request = AsyncRequestFactory().get("/", headers=bearer(seeded.reader.secret))
        return await keys.aauthenticate(request)

    async def scenario() -> None:
        try:
            assert (await verify()).user_id == OWNER  # now cached
            await sync_to_async(keys.manager.revoke_api_key)(seeded.reader.id)
            with pytest.raises(apikeys.RevokedKeyError):
                await verify()
        finally:
            await keys.aclose()

    asyncio.run(scenario())


# --- Django specifics ----------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_middleware_answers_api_key_errors_raised_by_any_view(
    seeded: Seeded, asynchronous: bool
) -> None:
    options = AppOptions(middleware=True)
    with django_client(seeded.url, options, asynchronous=asynchronous) as client:
        reply = client.request(
            "GET", "/unguarded-rate-limited", headers=bearer(seeded.admin.secret)
        )
    assert reply.status == 429
    assert reply.headers["retry-after"] == "3"
    assert reply.json == {"code": "rate_limited", "message": "slow down", "retryAfter": 3}


@method_decorator(require_api_key(cost=5), name="dispatch")
class CostlyClassBasedView(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"user": request.api_key.user_id})  # type: ignore[attr-defined]


class CostlyURLConf:
    """The demo app, plus a class-based view that costs 5."""

    urlpatterns: ClassVar[list[Any]] = [
        route("costly-class-based", CostlyClassBasedView.as_view()),
        *SyncURLConf.urlpatterns,
    ]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("path", ["/costly", "/costly-class-based"])
def test_behind_the_middleware_a_costly_call_its_limits_refuse_charges_nothing(
    seeded: Seeded, asynchronous: bool, path: str
) -> None:
    options = AppOptions(middleware=True)

    def guarded() -> AbstractContextManager[Client]:
        return django_client(
            seeded.url, options, asynchronous=asynchronous, ROOT_URLCONF=CostlyURLConf
        )

    assert_a_refused_costly_call_charges_nothing(guarded, seeded, path)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("path", ["/class-based", "/async-class-based"])
def test_class_based_views(seeded: Seeded, asynchronous: bool, path: str) -> None:
    with django_client(seeded.url, AppOptions(), asynchronous=asynchronous) as client:
        anonymous = client.request("GET", path)
        allowed = client.request("GET", path, headers=bearer(seeded.reader.secret))
        refused = client.request("GET", path, headers=bearer(seeded.revoked.secret))
    assert anonymous.status == 401
    assert allowed.status == 200
    assert allowed.json == {"user": OWNER}
    assert refused.status == 403
    assert refused.json["code"] == "revoked_api_key"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_exempt_paths_do_not_publish_a_key(seeded: Seeded, asynchronous: bool) -> None:
    options = AppOptions(settings=IntegrationSettings(exempt_paths=("/whoami",)))
    with django_client(
        seeded.url,
        options,
        asynchronous=asynchronous,
        MIDDLEWARE=["apikeys.integrations.django.APIKeyMiddleware"],
    ) as client:
        anonymous = client.request("GET", "/whoami")
        with_key = client.request("GET", "/whoami", headers=bearer(seeded.admin.secret))
        dotted = client.request("GET", "/whoami/../protected-sync")
    assert anonymous.status == 200
    assert anonymous.json == {"user": None}
    assert with_key.json == {"user": None}  # exempt: the key is not even looked at
    assert dotted.status == 401


def test_views_and_api_keys_are_csrf_exempt(seeded: Seeded) -> None:
    from django.test import Client

    with django_client(
        seeded.url,
        AppOptions(),
        asynchronous=False,
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
    ):
        client = Client(enforce_csrf_checks=True)
        created = client.post(
            "/api-keys",
            data=b'{"name": "no csrf token"}',
            content_type="application/json",
            headers=bearer(seeded.admin.secret),
        )
        assert created.status_code == 201
        assert (
            client.post("/protected-sync", headers=bearer(seeded.admin.secret)).status_code == 200
        )
        # An undecorated view is still protected by CSRF: the middleware is really on.
        assert client.post("/health").status_code == 403


def test_management_answers_405_with_allow_after_authentication(seeded: Seeded) -> None:
    with django_client(seeded.url, AppOptions(), asynchronous=False) as client:
        anonymous = client.request("PUT", "/api-keys")
        listed = client.request("PUT", "/api-keys", headers=bearer(seeded.admin.secret))
        detail = client.request(
            "GET", f"/api-keys/{seeded.reader.id}", headers=bearer(seeded.admin.secret)
        )
    assert anonymous.status == 401
    assert listed.status == 405
    assert listed.headers["allow"] == "GET, POST, DELETE"
    assert detail.status == 405
    assert detail.headers["allow"] == "DELETE"


def test_backend_failures_are_logged_without_secrets(
    unavailable_url: str, seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="apikeys"),
        django_client(unavailable_url, AppOptions(), asynchronous=False) as client,
    ):
        reply = client.request("GET", "/protected-sync", headers=bearer(seeded.admin.secret))
    assert reply.status == 503
    logged = [
        r
        for r in caplog.records
        if r.name.startswith("apikeys") and "BackendUnavailableError" in r.getMessage()
    ]
    assert len(logged) == 1  # one failure, one record
    assert seeded.admin.secret not in caplog.text


def test_changing_the_setting_rebuilds_and_closes_the_old_managers(seeded: Seeded) -> None:
    from django.test.utils import override_settings

    from apikeys.integrations.django import APIKeys

    with override_settings(APIKEYS={"BACKEND": seeded.url}):
        first = APIKeys.current()
        assert APIKeys.current() is first
        manager = first.manager
        assert manager.validate_api_key(seeded.admin.secret).user_id == OWNER
        with override_settings(APIKEYS={"BACKEND": seeded.url, "REALM": "other"}):
            second = APIKeys.current()
            assert second is not first
            assert second.settings.realm == "other"
        # Closed when the setting changed: used again, a new manager is built.
        assert first.manager is not manager
        first.close()
        third = APIKeys.current()
        assert third is not second
        third.close()


def test_without_a_backend_the_default_managers_are_used(seeded: Seeded) -> None:
    apikeys.configure(url=seeded.url)
    try:
        with django_client(seeded.url, AppOptions(), asynchronous=False) as client:
            from django.test.utils import override_settings

            with override_settings(APIKEYS={}):
                reply = client.request(
                    "GET", "/protected-sync", headers=bearer(seeded.admin.secret)
                )
        assert reply.status == 200
        assert reply.json["user"] == OWNER
    finally:
        apikeys.configure()


@pytest.mark.parametrize(
    "setting",
    [
        ["not", "a", "dict"],
        {"COLOUR": "blue"},
        {"BACKEND": 42},
        {"EXEMPT_PATHS": ["no-slash"]},
        {"HEADER_NAMES": ["bad header"]},
        {"INVALID_KEY_STATUS": 418},
        {"CACHE_TTL": -1},
    ],
    ids=["not-a-dict", "unknown", "backend-type", "exempt", "header", "status", "manager-option"],
)
def test_bad_settings_fail_at_startup(setting: object) -> None:
    from django.test.utils import override_settings

    from apikeys.integrations.django import APIKeyMiddleware, APIKeys

    with override_settings(APIKEYS=setting):
        with pytest.raises(ConfigurationError):
            APIKeys.current()
        with pytest.raises(ConfigurationError):
            APIKeyMiddleware(lambda request: None)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("setting", "ids"),
    [
        ({"BACKEND": "sqlite:///keys.db"}, []),
        ({"BACKEND": "sqlite:///keys.db", "COLOUR": "blue"}, ["apikeys.E001"]),
        ({"EXEMPT_PATHS": ["health"]}, ["apikeys.E001"]),
        ({"ALLOW_QUERY_PARAM": True}, ["apikeys.W001"]),
    ],
    ids=["valid", "unknown", "exempt", "query-keys"],
)
def test_system_checks(setting: dict[str, object], ids: list[str]) -> None:
    from django.test.utils import override_settings

    from apikeys.integrations.django.apps import check_settings

    with override_settings(APIKEYS=setting):
        messages = check_settings()
    assert [message.id for message in messages] == ids
    assert all(message.hint for message in messages)


def test_example_project_passes_manage_py_check(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.django_project.manage", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "APIKEYS_BACKEND": db_url},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    broken = subprocess.run(
        [sys.executable, "-m", "examples.django_project.manage", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "APIKEYS_BACKEND": db_url, "APIKEYS_CACHE_TTL": "-1"},
        check=False,
    )
    assert broken.returncode != 0
    assert "apikeys.E001" in broken.stderr


def test_bad_declarations_fail_when_declared() -> None:
    from apikeys.integrations.django import APIKeyMiddleware, APIKeys, require_api_key

    with pytest.raises(ConfigurationError):
        require_api_key(scopes="bad scope!")
    with pytest.raises(ConfigurationError):
        require_api_key(scopes=["data:*"])  # a route requires scopes, never a wildcard

    class BadScopes(APIKeyMiddleware):
        scopes = ("Bad Scope",)

    class BadExempt(APIKeyMiddleware):
        exempt_paths = ("/a*b",)

    for middleware in (BadScopes, BadExempt):
        with pytest.raises(ConfigurationError):
            middleware(lambda request: None)  # type: ignore[arg-type,return-value]
    sync_manager = apikeys.create_key_manager("sqlite:///:memory:")
    async_manager = apikeys.create_async_key_manager("sqlite:///:memory:")
    try:
        with pytest.raises(ConfigurationError):
            APIKeys(manager=async_manager)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            APIKeys(async_manager=sync_manager)  # type: ignore[arg-type]
    finally:
        sync_manager.close()


def test_explicit_managers_stay_the_callers(seeded: Seeded) -> None:
    from django.test import RequestFactory

    from apikeys.integrations.django import APIKeys

    manager = apikeys.create_key_manager(seeded.url)
    try:
        keys = APIKeys(manager=manager)
        request = RequestFactory().get("/", headers=bearer(seeded.reader.secret))
        verified = keys.authenticate(request, ("read:data",))
        assert verified.id == seeded.reader.id
        assert request.api_key is verified  # type: ignore[attr-defined]
        keys.close()
        # Still usable: close() only closes managers the instance built.
        assert manager.validate_api_key(seeded.admin.secret).user_id == OWNER
    finally:
        manager.close()


def test_public_surface() -> None:
    import apikeys.integrations.django as module

    assert sorted(module.__all__) == [
        "APIKeyMiddleware",
        "APIKeys",
        "IntegrationSettings",
        "RateLimitFieldsMiddleware",
        "async_management_router",
        "management_router",
        "require_api_key",
        "to_response",
    ]
    assert module.IntegrationSettings is IntegrationSettings
    for name in module.__all__:
        assert getattr(module, name) is not None


@pytest.mark.parametrize(
    ("missing", "module", "extra"),
    [
        ("django", "apikeys.integrations.django", "django"),
        ("rest_framework", "apikeys.integrations.django.rest_framework", "drf"),
    ],
)
def test_import_guard_names_the_extra(missing: str, module: str, extra: str) -> None:
    # A fresh interpreter where the framework cannot be imported.
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "from apikeys import MissingDependencyError\n"
        "try:\n"
        f"    import {module}\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc.package, exc.extra, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split(" ", 2)[:2] == [missing, extra]
    assert f"pip install 'apikeys[{extra}]'" in result.stdout


# --- untrusted input --------------------------------------------------------------------- ---------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, Seeded]]:
    from tests.integrations.conftest import seed

    url = f"sqlite:///{tmp_path_factory.mktemp('django-fuzz') / 'keys.db'}"
    keys = seed(url)
    with django_client(url, AppOptions(), asynchronous=False) as client:
        yield client, keys


@given(body=st.one_of(st.binary(max_size=400), st.builds(as_json, st.dictionaries(
    st.sampled_from(["name", "scopes", "expiration", "userId", "metadata", "extra"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
              st.lists(st.text(max_size=12), max_size=3)),
))))  # fmt: skip
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_create_body_is_answered_without_a_server_error(
    fuzz_client: tuple[object, Seeded], body: bytes
) -> None:
    client, keys = fuzz_client
    before = keys.count_keys()
    reply = client.request(  # type: ignore[attr-defined]
        "POST", "/api-keys", headers=bearer(keys.admin.secret), content=body
    )
    assert reply.status in (201, 403, 422), reply.text
    assert keys.admin.secret not in reply.text
    assert keys.count_keys() == before + (1 if reply.status == 201 else 0)


@given(
    value=st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=300),
    header=st.sampled_from(["Authorization", "X-API-Key"]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_header_value_is_a_clean_refusal(
    fuzz_client: tuple[object, Seeded], value: str, header: str
) -> None:
    client, keys = fuzz_client
    reply = client.request("GET", "/protected-sync", headers={header: value})  # type: ignore[attr-defined]
    assert reply.status in (401, 403), reply.text
    assert reply.json["code"] in ("missing_api_key", "invalid_api_key")
    assert "Traceback" not in reply.text
    assert keys.admin.secret not in reply.text


# --- the example project in a real WSGI server ---------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("command_for", "app"),
    [
        (waitress_command, "examples.django_project.wsgi:application"),
        (uvicorn_command, "examples.django_project.asgi:application"),
    ],
    ids=["wsgi-waitress", "asgi-uvicorn"],
)
def test_example_project_over_real_http(
    seeded: Seeded, command_for: Callable[[str, int], list[str]], app: str
) -> None:
    with (
        running_server(command_for, app, seeded.url) as base_url,
        httpx.Client(base_url=base_url, timeout=10) as http,
    ):
        assert http.get("/health").json() == {"status": "ok"}

        missing = http.get("/protected")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        assert missing.json() == {"code": "missing_api_key", "message": "An API key is required"}

        auth = {"Authorization": f"Bearer {seeded.admin.secret}"}
        before = datetime.now(UTC)
        protected = http.get("/protected", headers=auth)
        assert protected.status_code == 200
        body = protected.json()
        assert set(body) == {"message", "user", "timestamp"}
        assert body["message"] == "API key authentication successful"
        assert body["user"] == OWNER
        stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        assert before - timedelta(seconds=5) <= stamp <= datetime.now(UTC)

        whoami = http.get("/whoami", headers={"X-API-Key": seeded.reader.secret})
        assert whoami.json()["user"] == OWNER
        assert http.get("/whoami").status_code == 401
        revoked = http.get("/protected", headers=bearer(seeded.revoked.secret))
        assert revoked.status_code == 403
        assert revoked.json()["code"] == "revoked_api_key"

        # A read-only key manages nothing: no listing, no minting, no revoking.
        before_refusals = seeded.count_keys()
        for method, target, payload in [
            ("GET", "/api-keys", None),
            ("POST", "/api-keys", {"name": "minted", "scopes": ["read:data"]}),
            ("DELETE", f"/api-keys/{seeded.admin.id}", None),
        ]:
            refused = http.request(
                method, target, headers=bearer(seeded.reader.secret), json=payload
            )
            assert refused.status_code == 403
            assert refused.headers["www-authenticate"] == (
                'Bearer realm="api", error="insufficient_scope", scope="keys:manage"'
            )
        assert seeded.count_keys() == before_refusals

        created = http.post(
            "/api-keys", headers=auth, json={"name": "e2e", "scopes": ["read:data", "keys:manage"]}
        )
        assert created.status_code == 201
        new_secret, new_id = created.json()["secret"], created.json()["id"]
        new_auth = bearer(new_secret)
        assert http.get("/data", headers=new_auth).json()["owner"] == OWNER
        assert http.get("/drf/data", headers=new_auth).json()["owner"] == OWNER
        assert http.get("/async-data", headers=new_auth).json()["owner"] == OWNER

        escalation = http.post(
            "/api-keys", headers=new_auth, json={"name": "more", "scopes": ["keys:write"]}
        )
        assert escalation.status_code == 403
        assert escalation.json()["missingScopes"] == ["keys:write"]
        bad = http.post("/api-keys", headers=auth, json={"name": "x", "expiration": "2001-01-01"})
        assert bad.status_code == 422
        assert [error["field"] for error in bad.json()["errors"]] == ["expiration"]

        listed = http.get("/api-keys", headers=auth, params={"limit": "100"})
        assert new_id in {item["id"] for item in listed.json()["items"]}
        assert new_secret not in listed.text

        assert http.delete(f"/api-keys/{seeded.other.id}", headers=auth).status_code == 404
        revoke = http.delete(f"/api-keys/{new_id}", headers=auth, params={"reason": "e2e done"})
        assert revoke.status_code == 200
        assert revoke.json()["revocationReason"] == "e2e done"
        # The server's verification cache is dropped by its own revoke: refused at once.
        assert http.get("/data", headers=new_auth).status_code == 403
        assert http.get("/drf/data", headers=new_auth).status_code == 403
