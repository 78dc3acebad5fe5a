"""The FastAPI integration: the shared contract, plus what only FastAPI has."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import schemathesis
from fastapi import Depends, FastAPI
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from requests.structures import CaseInsensitiveDict
from schemathesis import GenerationMode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

import apikeys
from apikeys import ConfigurationError, MissingDependencyError, VerifiedKey
from apikeys.integrations.fastapi import (
    APIKeyMiddleware,
    APIKeys,
    IntegrationSettings,
    require_api_key,
)
from tests.integrations.apps import asgi_client, fastapi_app, starlette_app
from tests.integrations.conftest import OWNER, Seeded, seed
from tests.integrations.contract import AppOptions, ClientFactory, IntegrationContract
from tests.integrations.servers import running_server, uvicorn_command

pytestmark = pytest.mark.fastapi


class TestFastAPIContract(IntegrationContract):
    @pytest.fixture
    def make_client(self) -> ClientFactory:
        return lambda url, options: asgi_client(fastapi_app(url, options))


class TestStarletteContract(IntegrationContract):
    """Plain Starlette: ``require_api_key`` decorators and the ``management_router`` mount."""

    @pytest.fixture
    def make_client(self) -> ClientFactory:
        return lambda url, options: asgi_client(starlette_app(url, options))


# --- property-based requests against the /api-keys OpenAPI schema, on a real server -------


@pytest.fixture(scope="module")
def served_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'keys.db'}"
    keys = seed(url)
    with running_server(uvicorn_command, "examples.fastapi_app:app", url) as base_url:
        yield base_url, keys


@pytest.mark.e2e
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_keys_schema_never_answers_500(
    served_example: tuple[str, Seeded], mode: GenerationMode
) -> None:
    base_url, keys = served_example
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    management = schema.include(path_regex="^/api-keys")
    auth = {"Authorization": f"Bearer {keys.admin.secret}"}

    @given(case=management.as_strategy(mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def no_server_error(case: schemathesis.Case[Any]) -> None:
        # Drop the credentials schemathesis made up from the security schemes: a
        # second, different key would be refused before the handler ever ran.
        case.headers = CaseInsensitiveDict(
            {
                name: value
                for name, value in (case.headers or {}).items()
                if name.lower() not in ("authorization", "x-api-key")
            }
        )
        response = case.call(headers=auth)
        assert response.status_code < 500, response.text
        assert keys.admin.secret not in response.text

    no_server_error()


# --- what only FastAPI and Starlette have ---------------------------------------------------


def _openapi(seeded: Seeded, options: AppOptions | None = None) -> dict[str, Any]:
    with asgi_client(fastapi_app(seeded.url, options or AppOptions())) as client:
        reply = client.request("GET", "/openapi.json")
    assert reply.status == 200
    document: dict[str, Any] = reply.json
    return document


def test_openapi_document_is_valid_and_shows_the_security_schemes(seeded: Seeded) -> None:
    document = _openapi(seeded)
    validate(document)
    assert document["components"]["securitySchemes"] == {
        "APIKeyBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer <key>`",
        },
        "APIKeyHeader": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "An API key in the `X-API-Key` header",
        },
    }
    either: list[dict[str, list[str]]] = [{"APIKeyBearer": []}, {"APIKeyHeader": []}]
    assert document["paths"]["/protected"]["get"]["security"] == either
    assert document["paths"]["/scoped"]["get"]["security"] == either
    assert "security" not in document["paths"]["/health"]["get"]


def test_openapi_without_protected_routes_is_left_alone() -> None:
    app = FastAPI()
    APIKeys(app, realm="svc")

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {}

    document = app.openapi()
    assert "securitySchemes" not in document.get("components", {})
    assert "security" not in document["paths"]["/open"]["get"]


def test_openapi_follows_the_accepted_credentials(seeded: Seeded) -> None:
    settings = IntegrationSettings(
        header_names=("X-Token", "X-Other"), allow_query_param=True, query_param="token"
    )
    document = _openapi(seeded, AppOptions(settings=settings))
    validate(document)
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"APIKeyHeader", "APIKeyHeader2", "APIKeyQuery"}
    assert (schemes["APIKeyHeader"]["name"], schemes["APIKeyHeader2"]["name"]) == (
        "X-Token",
        "X-Other",
    )
    assert (schemes["APIKeyQuery"]["in"], schemes["APIKeyQuery"]["name"]) == ("query", "token")
    assert document["paths"]["/protected"]["get"]["security"] == [
        {"APIKeyHeader": []},
        {"APIKeyHeader2": []},
        {"APIKeyQuery": []},
    ]


def test_openapi_documents_the_management_endpoints(seeded: Seeded) -> None:
    paths = _openapi(seeded)["paths"]
    assert set(paths["/api-keys"]) == {"get", "post", "delete"}
    assert set(paths["/api-keys/{key_id}"]) == {"delete"}
    create = paths["/api-keys"]["post"]
    body_schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["required"] == ["name"]
    assert body_schema["additionalProperties"] is False
    assert (
        "secret"
        in create["responses"]["201"]["content"]["application/json"]["schema"]["properties"]
    )
    listing = paths["/api-keys"]["get"]
    assert [p["name"] for p in listing["parameters"]] == ["limit", "offset", "includeInvalid"]
    assert set(listing["responses"]) >= {"200", "401", "403", "422", "503"}


def test_api_keys_refuses_a_sync_manager(seeded: Seeded) -> None:
    manager = apikeys.create_key_manager(seeded.url)
    try:
        with pytest.raises(ConfigurationError, match="async manager"):
            APIKeys(FastAPI(), manager=manager)  # type: ignore[arg-type]  # the wrong kind on purpose
    finally:
        manager.close()


def test_api_keys_takes_settings_or_options_not_both() -> None:
    with pytest.raises(ConfigurationError):
        APIKeys(settings=IntegrationSettings(), realm="x")
    with pytest.raises(ConfigurationError):
        APIKeys(header_names=["bad header"])
    assert APIKeys(realm="svc").settings.realm == "svc"


def test_without_api_keys_the_app_fails_closed() -> None:
    app = FastAPI()

    @app.get("/protected")
    async def protected(key: VerifiedKey = Depends(require_api_key())) -> dict[str, str]:  # noqa: B008
        return {"user": key.user_id}

    with TestClient(app) as client, pytest.raises(ConfigurationError, match=r"APIKeys\(app\)"):
        client.get("/protected", headers={"X-API-Key": "apk_1x"})


def test_bad_route_scopes_fail_when_the_route_is_declared() -> None:
    with pytest.raises(ConfigurationError):
        require_api_key(["data:*"])
    with pytest.raises(ConfigurationError):
        APIKeyMiddleware(FastAPI(), exempt_paths=["no-slash"])


def test_default_manager_comes_from_configuration(seeded: Seeded) -> None:
    apikeys.configure(url=seeded.url)
    try:
        app = FastAPI()
        APIKeys(app)

        @app.get("/protected")
        async def protected(key: VerifiedKey = Depends(require_api_key())) -> dict[str, str]:  # noqa: B008
            return {"user": key.user_id}

        with TestClient(app) as client:
            reply = client.get("/protected", headers={"X-API-Key": seeded.admin.secret})
            assert reply.json() == {"user": OWNER}
            # The default async manager is bound to this client's event loop: close it there.
            assert client.portal is not None  # set while the client is open
            client.portal.call(apikeys.get_async_key_manager().close)
    finally:
        apikeys.configure()


def test_dependency_reuses_the_key_the_middleware_verified(seeded: Seeded) -> None:
    calls: list[str] = []
    app = fastapi_app(seeded.url, AppOptions(middleware=True))
    keys = APIKeys.of(app)
    real_validate = keys.manager.validate_api_key

    async def counting_validate(secret: str, **kwargs: Any) -> VerifiedKey:
        calls.append("validate")
        return await real_validate(secret, **kwargs)

    keys.manager.validate_api_key = counting_validate  # type: ignore[method-assign]
    with asgi_client(app) as client:
        reply = client.request("GET", "/scoped", headers={"X-API-Key": seeded.admin.secret})
    assert reply.status == 200
    assert calls == ["validate"]


def _starlette_app(seeded: Seeded, manager: apikeys.AsyncKeyManager) -> Starlette:
    from apikeys.integrations.starlette import APIKeyMiddleware as StarletteMiddleware
    from apikeys.integrations.starlette import APIKeys as StarletteAPIKeys
    from apikeys.integrations.starlette import management_router as starlette_management
    from apikeys.integrations.starlette import require_api_key as starlette_require

    @starlette_require(["read:data"])
    async def scoped(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.state.api_key.user_id})

    @starlette_require()
    def sync_endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.state.api_key.user_id, "sync": True})

    @starlette_require("admin:write")
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"user": websocket.state.api_key.user_id})
        await websocket.close()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await manager.close()

    app = Starlette(
        routes=[
            Route("/scoped", scoped),
            Route("/sync", sync_endpoint),
            Route("/admin", admin),
            Route("/health", health),
            WebSocketRoute("/ws", websocket_endpoint),
            Mount("", app=starlette_management),
        ],
        lifespan=lifespan,
    )
    StarletteAPIKeys(app, manager=manager)
    app.add_middleware(StarletteMiddleware, exempt_paths=["/health"])
    return app


def test_plain_starlette_keys_a_leaked_key_minted_die_with_it(seeded: Seeded) -> None:
    app = _starlette_app(seeded, apikeys.create_async_key_manager(seeded.url))
    with TestClient(app) as client:
        leaked = client.post(
            "/api-keys",
            headers={"Authorization": f"Bearer {seeded.admin.secret}"},
            json={"name": "leaked", "scopes": ["read:data", "keys:*"]},
        ).json()
        thief = {"Authorization": f"Bearer {leaked['secret']}"}
        child = client.post(
            "/api-keys", headers=thief, json={"name": "minted", "scopes": ["read:data"]}
        )
        assert child.status_code == 201
        assert child.json()["createdBy"] == leaked["id"]
        minted = {"Authorization": f"Bearer {child.json()['secret']}"}
        assert client.get("/scoped", headers=minted).status_code == 200
        ended = client.delete(
            f"/api-keys/{leaked['id']}", headers={"Authorization": f"Bearer {seeded.admin.secret}"}
        )
        assert ended.status_code == 200
        refused = client.get("/scoped", headers=minted)
        assert refused.status_code == 403
        assert refused.json()["code"] == "revoked_api_key"


def test_plain_starlette_app(seeded: Seeded) -> None:
    app = _starlette_app(seeded, apikeys.create_async_key_manager(seeded.url))
    auth = {"Authorization": f"Bearer {seeded.reader.secret}"}
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/scoped").status_code == 401
        assert client.get("/scoped", headers=auth).json() == {"user": OWNER}
        assert client.get("/sync", headers=auth).json() == {"user": OWNER, "sync": True}
        refused = client.get("/admin", headers=auth)
        assert refused.status_code == 403
        assert refused.json()["missingScopes"] == ["admin:write"]
        assert client.get("/api-keys").status_code == 401
        assert client.get("/api-keys", headers=auth).status_code == 403  # no keys:manage
        auth = {"Authorization": f"Bearer {seeded.admin.secret}"}
        listed = client.get("/api-keys", headers=auth)
        assert listed.status_code == 200
        assert listed.json()["total"] == 2
        created = client.post(
            "/api-keys", headers=auth, json={"name": "s", "scopes": ["read:data"]}
        )
        assert created.status_code == 201
        revoked = client.delete(f"/api-keys/{created.json()['id']}", headers=auth)
        assert revoked.status_code == 200


def test_starlette_decorator_without_middleware_answers_errors_itself(seeded: Seeded) -> None:
    from apikeys.integrations.starlette import APIKeys as StarletteAPIKeys
    from apikeys.integrations.starlette import require_api_key as starlette_require

    manager = apikeys.create_async_key_manager(seeded.url)

    @starlette_require()
    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.state.api_key.user_id})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await manager.close()

    app = Starlette(routes=[Route("/", endpoint)], lifespan=lifespan)
    StarletteAPIKeys(app, manager=manager, invalid_key_status=401)
    with TestClient(app) as client:
        refused = client.get("/", headers={"X-API-Key": seeded.expired.secret})
        assert refused.status_code == 401
        assert refused.json()["code"] == "expired_api_key"
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]


async def websocket_exchange(
    app: Any, headers: dict[str, str], *, denial_extension: bool = True
) -> list[dict[str, Any]]:
    """Open a WebSocket on ``app`` at ``/ws`` straight through ASGI; return what it sent.

    Driven by hand rather than through the test client, whose handling of
    denial responses races with its own task cancellation.
    """
    incoming: list[dict[str, Any]] = [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(n.lower().encode(), v.encode()) for n, v in headers.items()],
        "extensions": {"websocket.http.response": {}} if denial_extension else {},
    }
    await app(scope, receive, send)
    return sent


def _denial(sent: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    start, body = sent[0], sent[1]
    assert start["type"] == "websocket.http.response.start"
    assert body["type"] == "websocket.http.response.body"
    return start["status"], json.loads(body["body"])


def _accepted_messages(sent: list[dict[str, Any]]) -> list[Any]:
    assert sent[0]["type"] == "websocket.accept"
    return [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]


async def test_middleware_refuses_a_websocket_handshake_with_the_json_answer(
    seeded: Seeded,
) -> None:
    manager = apikeys.create_async_key_manager(seeded.url)
    app = _starlette_app(seeded, manager)
    try:
        status, body = _denial(await websocket_exchange(app, {}))
        accepted = await websocket_exchange(app, {"X-API-Key": seeded.reader.secret})
    finally:
        await manager.close()
    assert (status, body["code"]) == (401, "missing_api_key")
    assert _accepted_messages(accepted) == [{"user": OWNER}]


async def test_websocket_without_the_denial_extension_is_closed_1008(seeded: Seeded) -> None:
    manager = apikeys.create_async_key_manager(seeded.url)
    app = _starlette_app(seeded, manager)
    try:
        sent = await websocket_exchange(app, {}, denial_extension=False)
    finally:
        await manager.close()
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_fastapi_websocket_route_with_the_dependency(seeded: Seeded) -> None:
    manager = apikeys.create_async_key_manager(seeded.url)
    app = FastAPI()
    APIKeys(app, manager=manager)

    @app.websocket("/ws")
    async def feed(
        websocket: WebSocket,
        key: VerifiedKey = Depends(require_api_key(["read:data"])),  # noqa: B008
    ) -> None:
        await websocket.accept()
        await websocket.send_json({"user": key.user_id})
        await websocket.close()

    try:
        status, body = _denial(await websocket_exchange(app, {"X-API-Key": seeded.revoked.secret}))
        accepted = await websocket_exchange(app, {"X-API-Key": seeded.reader.secret})
    finally:
        await manager.close()
    assert (status, body["code"]) == (403, "revoked_api_key")
    assert _accepted_messages(accepted) == [{"user": OWNER}]


def test_middleware_passes_lifespan_through(seeded: Seeded) -> None:
    started: list[bool] = []
    manager = apikeys.create_async_key_manager(seeded.url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started.append(True)
        yield
        await manager.close()

    app = FastAPI(lifespan=lifespan)
    APIKeys(app, manager=manager)
    app.add_middleware(APIKeyMiddleware)
    with TestClient(app):
        pass
    assert started == [True]


@pytest.mark.parametrize(
    ("module", "extra"),
    [("apikeys.integrations.fastapi", "fastapi"), ("apikeys.integrations.starlette", "starlette")],
)
def test_import_guard_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, extra: str
) -> None:
    # As if neither were installed: none of their modules imports, even one already loaded.
    for name in list(sys.modules):
        if name.partition(".")[0] in ("fastapi", "starlette"):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(MissingDependencyError, match=rf"pip install 'apikeys\[{extra}\]'"):
        importlib.import_module(module)


def test_integrations_import_no_backend_dependency() -> None:
    code = (
        "import sys\n"
        "import apikeys.integrations.fastapi, apikeys.integrations.flask\n"
        "loaded = {'sqlalchemy', 'argon2', 'aiosqlite', 'psycopg', 'httpx'} & set(sys.modules)\n"
        "print(sorted(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_forged_keys_for_a_known_id_never_lock_its_holder_out(seeded: Seeded) -> None:
    manager = apikeys.create_async_key_manager(seeded.url, cache_ttl=0)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await manager.close()

    app = FastAPI(lifespan=lifespan)
    APIKeys(app, manager=manager)

    @app.get("/protected")
    async def protected(key: VerifiedKey = Depends(require_api_key())) -> dict[str, str]:  # noqa: B008
        return {"user": key.user_id}

    forged = [apikeys.generate_key(id=seeded.admin.id).key for _ in range(150)]
    with TestClient(app) as client:
        statuses = {
            client.get("/protected", headers={"X-API-Key": key}).status_code for key in forged
        }
        holder = client.get("/protected", headers={"X-API-Key": seeded.admin.secret})
    assert statuses == {403}
    assert holder.status_code == 200
    assert holder.json() == {"user": OWNER}
