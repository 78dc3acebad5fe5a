"""Can one request's verified key answer for another's?

Every framework keeps some state longer than a request: Flask's application
context (and its ``g``) when one is pushed at import or a test client runs
inside ``with app.app_context()``, or under a server that serves every request
on one thread; Starlette's lifespan state, copied into every request's
``request.state``; the one worker thread of a WSGI server. Each test here
sets that state up as a real project does, sends a request with a valid key,
then attacks: no key (401), garbage and near-miss keys (403), another user's
key (that user), an unauthenticated ``POST /api-keys`` (401, no key minted),
and a route that needs no key (sees none). Through each framework's own test
client and under the real servers (werkzeug with ``threaded=False``, gunicorn's
sync worker with ``-w 1``, waitress with ``threads=1``, uvicorn).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from django.test.utils import override_settings
from fastapi import Depends, FastAPI, WebSocket

import apikeys
from apikeys import VerifiedKey
from tests.integrations.apps import asgi_client, flask_app, flask_client
from tests.integrations.conftest import OTHER_OWNER, OWNER, Seeded
from tests.integrations.contract import AppOptions, Client, Reply, bearer
from tests.integrations.django_settings import (
    AsyncURLConf,
    SyncURLConf,
    apikeys_setting,
    configured,
    django_client,
    middleware_for,
)
from tests.integrations.django_settings import reply_of as django_reply_of
from tests.security.lingering_apps import ContextPushedInServingThread
from tests.security.proxying import gunicorn_serving, uvicorn_serving, waitress_serving
from tests.security.raw_http import HTTPClient, werkzeug_serving

NEW_KEY = json.dumps({"name": "minted", "scopes": ["read:data"]}).encode()
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    with configured():
        yield


def near_misses(secret: str) -> list[str]:
    """Keys that are not ``secret`` but share all of it but one character or more."""
    last = "A" if secret[-1] != "A" else "B"
    return [secret[:-1], secret + "x", secret[:-1] + last, secret[: len(secret) // 2]]


def attack(client: Client, seeded: Seeded, path: str, *, whoami: bool = True) -> None:
    """A valid request on ``path``, then everything that must not borrow its key."""
    first = client.request("GET", path, headers=bearer(seeded.admin.secret))
    assert (first.status, first.json["user"]) == (200, OWNER), first.text

    no_key = client.request("GET", path)
    assert no_key.status == 401, no_key.text
    assert no_key.json["code"] == "missing_api_key"
    for garbage in ["garbage", "apk_garbage", *near_misses(seeded.admin.secret)]:
        refused = client.request("GET", path, headers=bearer(garbage))
        assert refused.status == 403, (garbage, refused.text)
        assert refused.json["code"] == "invalid_api_key"

    keys_before = seeded.count_keys()
    minted = client.request("POST", "/api-keys", headers=JSON, content=NEW_KEY)
    assert minted.status == 401, minted.text
    assert "secret" not in minted.json
    assert seeded.count_keys() == keys_before

    other = client.request("GET", path, headers=bearer(seeded.other.secret))
    assert (other.status, other.json["user"]) == (200, OTHER_OWNER), other.text
    if whoami:
        # A route that requires no key sees none, not the last request's.
        unguarded = client.request("GET", "/whoami")
        assert (unguarded.status, unguarded.json) == (200, {"user": None}), unguarded.text
    assert client.request("GET", path).status == 401


# --- Flask ------------------------------------------------------------------------------


@pytest.mark.flask
@pytest.mark.parametrize("middleware", [False, True], ids=["decorator", "middleware"])
def test_flask_app_context_pushed_at_import(seeded: Seeded, middleware: bool) -> None:
    from flask import g

    app = flask_app(seeded.url, AppOptions(middleware=middleware))
    context = app.app_context()
    context.push()
    try:
        with flask_client(app) as client:
            attack(client, seeded, "/protected-sync", whoami=not middleware)
            attack(client, seeded, "/protected", whoami=False)  # an async view
        # Nor does the context keep the last request's key once requests are over.
        assert "api_key" not in g
    finally:
        context.pop()


@pytest.mark.flask
def test_flask_test_client_inside_app_context(seeded: Seeded) -> None:
    app = flask_app(seeded.url, AppOptions())
    with app.app_context(), flask_client(app) as client:
        attack(client, seeded, "/protected-sync")
        attack(client, seeded, "/scoped")


@pytest.mark.flask
@pytest.mark.e2e
@pytest.mark.parametrize("server", ["werkzeug", "waitress", "gunicorn"])
def test_flask_under_a_one_thread_server(seeded: Seeded, server: str, tmp_path: Path) -> None:
    serving: AbstractContextManager[int]
    if server == "gunicorn":
        # The sync worker (gunicorn's default), one worker: the app, and the context it
        # pushes when loaded, live in the thread that serves every request.
        serving = gunicorn_serving(
            "tests.security.lingering_apps:create_flask_app()",
            {"APIKEYS_BACKEND": seeded.url},
            tmp_path / "gunicorn.log",
        )
    else:
        app = ContextPushedInServingThread(flask_app(seeded.url, AppOptions()))
        serving = (
            werkzeug_serving(app) if server == "werkzeug" else waitress_serving(app, threads=1)
        )
    with serving as port:
        attack(HTTPClient(port), seeded, "/protected-sync")


# --- Django -----------------------------------------------------------------------------


@pytest.mark.django
@pytest.mark.parametrize("middleware", [False, True], ids=["decorator", "middleware"])
@pytest.mark.parametrize(
    ("asynchronous", "path"),
    [(False, "/protected-sync"), (True, "/protected")],
    ids=["sync", "async"],
)
def test_django_one_client_many_requests(
    seeded: Seeded, asynchronous: bool, path: str, middleware: bool
) -> None:
    options = AppOptions(middleware=middleware)
    with django_client(seeded.url, options, asynchronous=asynchronous) as client:
        attack(client, seeded, path, whoami=not middleware)
        attack(client, seeded, "/scoped", whoami=False)


@pytest.mark.django
@pytest.mark.parametrize("middleware", [False, True], ids=["authentication", "middleware"])
def test_django_rest_framework(seeded: Seeded, middleware: bool) -> None:
    from rest_framework.test import APIClient

    from apikeys.integrations.django import APIKeys
    from tests.integrations.test_django_rest_framework import DRFURLConf

    options = AppOptions(middleware=middleware)
    overrides = {
        "APIKEYS": apikeys_setting(seeded.url, options),
        "ROOT_URLCONF": DRFURLConf.build(),
        "MIDDLEWARE": middleware_for(options),
    }
    with override_settings(**overrides):
        drf = APIClient()

        class DRFClient:
            def request(
                self,
                method: str,
                path: str,
                *,
                headers: Mapping[str, str] | None = None,
                params: Mapping[str, str] | None = None,
                content: bytes | None = None,
            ) -> Reply:
                # Bytes as Django's RequestFactory takes them; the DRF stubs say str only.
                body = cast("str", content or b"")
                response = drf.generic(
                    method, path, body, content_type="application/json", headers=headers
                )
                return django_reply_of(response)

        try:
            attack(DRFClient(), seeded, "/drf/key", whoami=not middleware)
        finally:
            APIKeys.current().close()


@contextmanager
def django_served(seeded: Seeded, asynchronous: bool) -> Iterator[int]:
    """The Django demo app under waitress with one thread (WSGI) or uvicorn (ASGI)."""
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    from apikeys.integrations.django import APIKeys

    changes = {
        "APIKEYS": apikeys_setting(seeded.url, AppOptions()),
        "ROOT_URLCONF": AsyncURLConf if asynchronous else SyncURLConf,
    }
    with override_settings(**changes):
        try:
            if asynchronous:
                with uvicorn_serving(ASGIHandler(), lifespan="off") as port:
                    yield port
            else:
                with waitress_serving(WSGIHandler(), threads=1) as port:
                    yield port
        finally:
            APIKeys.current().close()


@pytest.mark.django
@pytest.mark.e2e
@pytest.mark.parametrize(
    ("asynchronous", "path"),
    [(False, "/protected-sync"), (True, "/protected")],
    ids=["waitress-sync", "uvicorn-async"],
)
def test_django_under_a_real_server(seeded: Seeded, asynchronous: bool, path: str) -> None:
    with django_served(seeded, asynchronous) as port:
        attack(HTTPClient(port), seeded, path)


# --- FastAPI / Starlette ----------------------------------------------------------------


def lingering_key(seeded: Seeded) -> VerifiedKey:
    """The admin key as a verified key: what a lifespan state might hold for every request."""
    return VerifiedKey(id=seeded.admin.id, user_id=OWNER, name="admin", scopes=("read:data",))


def fastapi_app_with_state(
    manager: apikeys.AsyncKeyManager, state: Mapping[str, Any], *, middleware: bool
) -> Any:
    """A FastAPI app whose lifespan state (copied into every request) holds ``state``.

    Its lifespan closes ``manager`` at shutdown.
    """
    from apikeys.integrations.fastapi import (
        APIKeyMiddleware,
        APIKeys,
        management_router,
        require_api_key,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield dict(state)
        await manager.close()

    app = FastAPI(lifespan=lifespan)
    APIKeys(app, manager=manager)
    app.include_router(management_router)
    if middleware:
        app.add_middleware(APIKeyMiddleware, exempt_paths=["/health"])
    key_dependency = Depends(require_api_key())

    @app.get("/protected-sync")
    async def protected(key: VerifiedKey = key_dependency) -> dict[str, str]:
        return {"user": key.user_id}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws")
    async def websocket(socket: WebSocket, key: VerifiedKey = key_dependency) -> None:
        await socket.accept()
        await socket.send_json({"user": key.user_id})
        await socket.close()

    return app


@pytest.mark.fastapi
@pytest.mark.parametrize("middleware", [False, True], ids=["dependency", "middleware"])
def test_fastapi_lifespan_state_holding_a_key(seeded: Seeded, middleware: bool) -> None:
    manager = apikeys.create_async_key_manager(seeded.url)
    app = fastapi_app_with_state(manager, {"api_key": lingering_key(seeded)}, middleware=middleware)
    with asgi_client(app, peer="127.0.0.1") as client:
        attack(client, seeded, "/protected-sync", whoami=False)


async def websocket_exchange(
    app: Any, headers: Mapping[str, str], state: Mapping[str, Any]
) -> tuple[int, Any]:
    """Open ``/ws`` through ASGI as uvicorn does (the lifespan state copied into the scope).

    Returns ``(101, first message)`` when accepted, ``(status, JSON body)`` when denied.
    """
    incoming = [{"type": "websocket.connect"}]
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
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "scheme": "ws",
        "subprotocols": [],
        "state": dict(state),
        "extensions": {"websocket.http.response": {}},
        "app": app,
    }
    await app(scope, receive, send)
    if sent[0]["type"] == "websocket.accept":
        return 101, json.loads(sent[1]["text"])
    assert sent[0]["type"] == "websocket.http.response.start", sent
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.mark.fastapi
@pytest.mark.parametrize("middleware", [False, True], ids=["dependency", "middleware"])
async def test_fastapi_websocket_with_a_lingering_key(seeded: Seeded, middleware: bool) -> None:
    manager = apikeys.create_async_key_manager(seeded.url)
    state = {"api_key": lingering_key(seeded)}
    app = fastapi_app_with_state(manager, state, middleware=middleware)
    try:

        async def connect(headers: Mapping[str, str]) -> tuple[int, Any]:
            return await websocket_exchange(app, headers, state)

        assert await connect(bearer(seeded.admin.secret)) == (101, {"user": OWNER})
        status, body = await connect({})
        assert (status, body["code"]) == (401, "missing_api_key")
        for garbage in ["garbage", *near_misses(seeded.admin.secret)]:
            status, body = await connect(bearer(garbage))
            assert (status, body["code"]) == (403, "invalid_api_key"), garbage
        assert await connect(bearer(seeded.other.secret)) == (101, {"user": OTHER_OWNER})
    finally:
        await manager.close()


@pytest.mark.fastapi
@pytest.mark.e2e
@pytest.mark.parametrize("middleware", [False, True], ids=["dependency", "middleware"])
def test_fastapi_under_uvicorn(seeded: Seeded, middleware: bool) -> None:
    manager = apikeys.create_async_key_manager(seeded.url)
    app = fastapi_app_with_state(manager, {"api_key": lingering_key(seeded)}, middleware=middleware)
    with uvicorn_serving(app) as port:
        attack(HTTPClient(port), seeded, "/protected-sync", whoami=False)
