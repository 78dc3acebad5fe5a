"""The demo app of :mod:`tests.integrations.contract`, built in each framework."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

from fastapi import Depends, FastAPI, Request

from apikeys import RateLimitedError, VerifiedKey
from tests.integrations.contract import AppOptions, Client, Reply, apply_clock

EXEMPT_PATHS = ("/health", "/public/*")


def product_docs_body(key: VerifiedKey) -> dict[str, str]:
    """What the product docs' protected endpoint answers."""
    return {
        "message": "API key authentication successful",
        "user": key.user_id,
        "timestamp": datetime.now(UTC).isoformat(),
    }


def _latin1_headers(headers: Mapping[str, str] | None) -> dict[bytes, bytes]:
    # Sent as bytes so that a non-ASCII value reaches the app instead of failing in the client.
    return {
        name.encode("latin-1"): value.encode("latin-1") for name, value in (headers or {}).items()
    }


Send = Callable[[str, str, Mapping[str, str] | None, Mapping[str, str] | None, bytes | None], Reply]
"""``(method, path, headers, params, content) -> Reply`` through one framework's test client."""


class SendingClient:
    """The contract's :class:`Client` over a framework-specific ``send`` function."""

    def __init__(self, send: Send) -> None:
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
        return self._send(method, path, headers, params, content)


def reply_of(status: int, headers: Iterable[tuple[str, str]], text: str) -> Reply:
    """A :class:`Reply` with lower-cased header names."""
    return Reply(status, {name.lower(): value for name, value in headers}, text)


# --- FastAPI ---------------------------------------------------------------------------


def fastapi_app(url: str, options: AppOptions) -> Any:
    """The demo app in FastAPI, on an async manager closed at shutdown."""
    import apikeys
    from apikeys.integrations.fastapi import (
        APIKeyMiddleware,
        APIKeys,
        management_router,
        require_api_key,
    )

    manager = apikeys.create_async_key_manager(url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await manager.close()

    app = FastAPI(lifespan=lifespan)
    apply_clock(APIKeys(app, manager=manager, settings=options.settings).limiters, options)
    app.include_router(management_router)
    if options.middleware:
        app.add_middleware(
            APIKeyMiddleware, scopes=options.middleware_scopes, exempt_paths=EXEMPT_PATHS
        )

    @app.get("/protected")
    async def protected(key: VerifiedKey = Depends(require_api_key())) -> dict[str, str]:  # noqa: B008
        return product_docs_body(key)

    @app.get("/protected-sync")
    def protected_sync(key: VerifiedKey = Depends(require_api_key())) -> dict[str, str]:  # noqa: B008
        return product_docs_body(key)

    @app.get("/scoped")
    async def scoped(key: VerifiedKey = Depends(require_api_key(["read:data"]))) -> dict[str, str]:  # noqa: B008
        return {"user": key.user_id}

    @app.get("/admin")
    async def admin(key: VerifiedKey = Depends(require_api_key("admin:write"))) -> dict[str, str]:  # noqa: B008
        return {"user": key.user_id}

    @app.get("/rate-limited")
    async def rate_limited(_: VerifiedKey = Depends(require_api_key())) -> None:  # noqa: B008
        raise RateLimitedError("slow down", retry_after=7)

    @app.get("/costly")
    async def costly(key: VerifiedKey = Depends(require_api_key(cost=5))) -> dict[str, str]:  # noqa: B008
        return {"user": key.user_id}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/public/info")
    async def public_info() -> dict[str, str]:
        return {"info": "public"}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, str | None]:
        key = getattr(request.state, "api_key", None)
        return {"user": key.user_id if key else None}

    return app


def starlette_app(url: str, options: AppOptions) -> Any:
    """The demo app in plain Starlette (no FastAPI), on an async manager closed at shutdown."""
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    import apikeys
    from apikeys.integrations.starlette import (
        APIKeyMiddleware,
        APIKeys,
        management_router,
        require_api_key,
    )

    manager = apikeys.create_async_key_manager(url)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await manager.close()

    def published(request: StarletteRequest) -> VerifiedKey:
        key: VerifiedKey = request.state.api_key
        return key

    @require_api_key()
    async def protected(request: StarletteRequest) -> JSONResponse:
        return JSONResponse(product_docs_body(published(request)))

    @require_api_key()
    def protected_sync(request: StarletteRequest) -> JSONResponse:
        return JSONResponse(product_docs_body(published(request)))

    @require_api_key(["read:data"])
    async def scoped(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"user": published(request).user_id})

    @require_api_key("admin:write")
    async def admin(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"user": published(request).user_id})

    @require_api_key()
    async def rate_limited(request: StarletteRequest) -> JSONResponse:
        raise RateLimitedError("slow down", retry_after=7)

    @require_api_key(cost=5)
    async def costly(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"user": published(request).user_id})

    async def health(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def public_info(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"info": "public"})

    async def whoami(request: StarletteRequest) -> JSONResponse:
        key = getattr(request.state, "api_key", None)
        return JSONResponse({"user": key.user_id if key else None})

    app = Starlette(
        routes=[
            Route("/protected", protected),
            Route("/protected-sync", protected_sync),
            Route("/scoped", scoped),
            Route("/admin", admin),
            Route("/rate-limited", rate_limited),
            Route("/costly", costly),
            Route("/health", health),
            Route("/public/info", public_info),
            Route("/whoami", whoami),
            Mount("", app=management_router),
        ],
        lifespan=lifespan,
    )
    apply_clock(APIKeys(app, manager=manager, settings=options.settings).limiters, options)
    if options.middleware:
        app.add_middleware(
            APIKeyMiddleware, scopes=options.middleware_scopes, exempt_paths=EXEMPT_PATHS
        )
    return app


@contextmanager
def asgi_client(app: Any, *, peer: str = "testclient") -> Iterator[Client]:
    """Run ``app`` (lifespan included) under Starlette's ``TestClient``, from address ``peer``."""
    from starlette.testclient import TestClient

    with TestClient(app, client=(peer, 50000)) as client:

        def send(
            method: str,
            path: str,
            headers: Mapping[str, str] | None,
            params: Mapping[str, str] | None,
            content: bytes | None,
        ) -> Reply:
            response = client.request(
                method, path, headers=_latin1_headers(headers), params=params, content=content
            )
            return reply_of(response.status_code, response.headers.items(), response.text)

        yield SendingClient(send)


# --- Flask ---------------------------------------------------------------------------------


def flask_app(url: str, options: AppOptions) -> Any:
    """The demo app in Flask, configured through ``app.config``."""
    from flask import Flask, g

    from apikeys.integrations.flask import (
        APIKeyMiddleware,
        APIKeys,
        management_router,
        require_api_key,
    )

    app = Flask(__name__)
    app.config["APIKEYS_BACKEND"] = url
    for name, value in options.settings.model_dump(exclude_defaults=True).items():
        app.config[f"APIKEYS_{name.upper()}"] = value
    APIKeys(app)
    apply_clock(app.extensions["apikeys"].limiters, options)
    app.register_blueprint(management_router)
    if options.middleware:
        APIKeyMiddleware(app, scopes=options.middleware_scopes, exempt_paths=EXEMPT_PATHS)

    @app.get("/protected")
    @require_api_key
    async def protected() -> dict[str, str]:
        return product_docs_body(g.api_key)

    @app.get("/protected-sync")
    @require_api_key()
    def protected_sync() -> dict[str, str]:
        return product_docs_body(g.api_key)

    @app.get("/scoped")
    @require_api_key(scopes=["read:data"])
    def scoped() -> dict[str, str]:
        return {"user": g.api_key.user_id}

    @app.get("/admin")
    @require_api_key(scopes="admin:write")
    def admin() -> dict[str, str]:
        return {"user": g.api_key.user_id}

    @app.get("/rate-limited")
    @require_api_key
    def rate_limited() -> NoReturn:
        raise RateLimitedError("slow down", retry_after=7)

    @app.get("/costly")
    @require_api_key(cost=5)
    def costly() -> dict[str, str]:
        return {"user": g.api_key.user_id}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/public/info")
    def public_info() -> dict[str, str]:
        return {"info": "public"}

    @app.get("/whoami")
    def whoami() -> dict[str, str | None]:
        key = g.get("api_key")
        return {"user": key.user_id if key else None}

    return app


@contextmanager
def flask_client(app: Any) -> Iterator[Client]:
    """Flask's test client; closes the manager the app built from its config."""
    client = app.test_client()

    def send(
        method: str,
        path: str,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        content: bytes | None,
    ) -> Reply:
        response = client.open(
            path, method=method, headers=dict(headers or {}), query_string=params, data=content
        )
        return reply_of(response.status_code, response.headers.items(), response.get_data(True))

    try:
        yield SendingClient(send)
    finally:
        state = app.extensions.get("apikeys")
        if state is not None and state.manager is not None:
            state.manager.close()
