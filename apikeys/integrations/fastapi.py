"""API-key authentication for FastAPI: a dependency, a middleware and the ``/api-keys`` router.

Example:
    >>> from fastapi import Depends, FastAPI
    >>> import apikeys
    >>> from apikeys.integrations.fastapi import APIKeys, management_router, require_api_key
    >>> app = FastAPI()
    >>> keys = APIKeys(app, manager=apikeys.create_async_key_manager("sqlite:///:memory:"))
    >>> app.include_router(management_router)
    >>> @app.get("/protected")
    ... async def protected(key: apikeys.VerifiedKey = Depends(require_api_key(["read:data"]))):
    ...     return {"user": key.user_id}

``require_api_key`` shows up in the OpenAPI document as security schemes:
``Authorization: Bearer`` and, added by ``APIKeys``, every other way the
settings accept a key (``X-API-Key`` by default). Only async managers are
accepted: nothing here blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from apikeys._errors import MissingDependencyError
from apikeys._models import VerifiedKey
from apikeys.integrations._authentication import required_scopes, route_cost
from apikeys.integrations._management import MANAGEMENT_PATH, ROUTED_METHODS
from apikeys.integrations._openapi import MANAGEMENT_OPERATIONS
from apikeys.integrations._settings import IntegrationSettings

try:
    from fastapi import APIRouter, Depends, FastAPI, Request, Response
    from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
    from fastapi.security.base import SecurityBase
    from starlette.requests import HTTPConnection
except ImportError as exc:
    raise MissingDependencyError("fastapi", "fastapi") from exc

# The Starlette adapter, which this one extends: imported once FastAPI is known to be there.
from apikeys.integrations.starlette import APIKeyMiddleware, to_response
from apikeys.integrations.starlette import APIKeys as StarletteAPIKeys

_BEARER_SCHEME = "APIKeyBearer"
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


class APIKeys(StarletteAPIKeys):
    """Binds an async key manager and :class:`IntegrationSettings` to a FastAPI app.

    As :class:`apikeys.integrations.starlette.APIKeys`, and it completes the
    app's OpenAPI document with the credentials the settings accept: an
    ``apiKey`` scheme for each header other than ``Authorization``
    (``X-API-Key`` by default) and for the query parameter when enabled, as
    alternatives on every operation protected by :func:`require_api_key`.
    Documenting them here costs nothing per request, unlike a dependency each.
    """

    def init_app(self, app: Any) -> None:
        """Attach to ``app`` (see the Starlette twin) and extend its OpenAPI document."""
        super().init_app(app)
        if isinstance(app, FastAPI):
            build_openapi = app.openapi

            def openapi() -> dict[str, Any]:
                if app.openapi_schema is None:
                    self._document_credentials(build_openapi())
                return build_openapi()

            app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented hook

    def _document_credentials(self, document: dict[str, Any]) -> None:
        schemes = document.get("components", {}).get("securitySchemes", {})
        if _BEARER_SCHEME not in schemes:
            return  # no route uses require_api_key
        settings = self.settings
        extra: dict[str, dict[str, str]] = {}
        for header in settings.header_names:
            if header.lower() != "authorization":
                name = "APIKeyHeader" + (str(len(extra) + 1) if extra else "")
                extra[name] = {"type": "apiKey", "in": "header", "name": header,
                               "description": f"An API key in the `{header}` header"}  # fmt: skip
        if settings.allow_query_param:
            extra["APIKeyQuery"] = {"type": "apiKey", "in": "query", "name": settings.query_param,
                                    "description": "An API key in the query string"}  # fmt: skip
        bearer_accepted = any(h.lower() == "authorization" for h in settings.header_names)
        schemes.update(extra)
        if not bearer_accepted:
            del schemes[_BEARER_SCHEME]
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                requirements = operation.get("security") if isinstance(operation, dict) else None
                if not requirements or {_BEARER_SCHEME: []} not in requirements:
                    continue
                if not bearer_accepted:
                    requirements.remove({_BEARER_SCHEME: []})
                requirements.extend({name: []} for name in extra)


class _APIKeyDependency(SecurityBase):
    """The dependency :func:`require_api_key` returns.

    It is itself the ``APIKeyBearer`` security scheme of the OpenAPI document,
    so FastAPI solves one dependency per request, not one per scheme;
    :class:`APIKeys` documents the other ways to send a key.
    """

    def __init__(self, scopes: tuple[str, ...] | None, cost: int = 1) -> None:
        self.model = HTTPBearerModel(description="An API key: `Authorization: Bearer <key>`")
        self.scheme_name = _BEARER_SCHEME
        self.scopes = scopes  # None: the management scopes of the app's APIKeys
        self.cost = cost

    async def __call__(self, connection: HTTPConnection) -> VerifiedKey:
        # HTTPConnection, not Request: WebSocket routes can depend on it too.
        keys = APIKeys.of(connection.app)
        scopes = keys.management_scopes if self.scopes is None else self.scopes
        return await keys.authenticate(connection.scope, scopes, self.cost)


def require_api_key(
    scopes: Iterable[str] | str = (), *, cost: int = 1
) -> Callable[..., Awaitable[VerifiedKey]]:
    """Return a dependency that verifies the request's key and returns it.

    Args:
        scopes: Scopes the key must hold (validated now, not per request).
        cost: What a call spends from the key's rate limit and quota (1 to 10**12),
            charged once per request, the middleware's unit included; the
            middleware runs before routing, so when the rest is refused its
            unit stays spent.

    Raises:
        ConfigurationError: A malformed scope or cost.

    Example:
        ``key: VerifiedKey = Depends(require_api_key(["read:data"]))``
    """
    return _APIKeyDependency(required_scopes(scopes), route_cost(cost))


_management_caller = _APIKeyDependency(None)


_CALLER = Depends(_management_caller)

management_router = APIRouter(tags=["api-keys"])
"""The ``/api-keys`` endpoints: ``app.include_router(management_router)``."""


def _operation(method: str, path: str) -> Callable[[_Endpoint], _Endpoint]:
    """Register an endpoint on the router, described by the core's OpenAPI operation."""
    operation = MANAGEMENT_OPERATIONS[(method, path)]
    extra: dict[str, Any] = {
        name: operation[name] for name in ("parameters", "requestBody") if name in operation
    }
    return management_router.api_route(
        path,
        methods=[method.upper()],
        summary=operation["summary"],
        status_code=operation["status"],
        response_class=Response,
        responses=operation["responses"],
        openapi_extra=extra,
    )


@_operation("get", MANAGEMENT_PATH)
async def list_api_keys(request: Request, caller: VerifiedKey = _CALLER) -> Response:
    """List the caller's keys, never with secrets."""
    return await APIKeys.of(request.app).serve_management(request, caller)


@_operation("post", MANAGEMENT_PATH)
async def create_api_key(request: Request, caller: VerifiedKey = _CALLER) -> Response:
    """Create a key whose scopes the caller's key covers."""
    return await APIKeys.of(request.app).serve_management(request, caller)


@_operation("delete", MANAGEMENT_PATH + "/{key_id}")
async def delete_api_key(request: Request, key_id: str, caller: VerifiedKey = _CALLER) -> Response:
    """Revoke a key by id (the id in the path)."""
    return await APIKeys.of(request.app).serve_management(request, caller, key_id)


@_operation("delete", MANAGEMENT_PATH)
async def delete_api_key_by_body(request: Request, caller: VerifiedKey = _CALLER) -> Response:
    """Revoke a key by id, the id in the body (``{"id": ...}``) or the query (``?id=``)."""
    return await APIKeys.of(request.app).serve_management(request, caller)


def _unserved(path: str, *served: str) -> Callable[[_Endpoint], _Endpoint]:
    """Route the methods ``path`` does not serve to the core, which answers one JSON 405."""
    return management_router.api_route(
        path,
        methods=[method for method in ROUTED_METHODS if method not in served],
        include_in_schema=False,
        response_class=Response,
    )


@_unserved(MANAGEMENT_PATH, "GET", "POST", "DELETE")
async def api_keys_method_not_allowed(request: Request, caller: VerifiedKey = _CALLER) -> Response:
    """405 with ``Allow: GET, POST, DELETE``, as every framework answers."""
    return await APIKeys.of(request.app).serve_management(request, caller)


@_unserved(MANAGEMENT_PATH + "/{key_id}", "DELETE")
async def api_key_method_not_allowed(
    request: Request, key_id: str, caller: VerifiedKey = _CALLER
) -> Response:
    """405 with ``Allow: DELETE``, as every framework answers."""
    return await APIKeys.of(request.app).serve_management(request, caller, key_id)


__all__ = [
    "APIKeyMiddleware",
    "APIKeys",
    "IntegrationSettings",
    "management_router",
    "require_api_key",
    "to_response",
]
