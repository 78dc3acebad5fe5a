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

``require_api_key`` shows up in the OpenAPI document as two security schemes
(``Authorization: Bearer`` and ``X-API-Key``). Only async managers are
accepted: nothing here blocks the event loop.
"""

from __future__ import annotations

from apikeys._imports import require

require("fastapi", "fastapi")

from collections.abc import Awaitable, Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

from fastapi import APIRouter, Depends, Request, Response, Security  # noqa: E402
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer  # noqa: E402

from apikeys._models import VerifiedKey  # noqa: E402
from apikeys.integrations._core import IntegrationSettings, required_scopes  # noqa: E402
from apikeys.integrations._management import (  # noqa: E402
    CREATE_BODY_SCHEMA,
    DELETE_BODY_SCHEMA,
    ERROR_SCHEMA,
    KEY_SCHEMA,
    MANAGEMENT_PATH,
    MAX_OFFSET,
    NEW_KEY_SCHEMA,
    PAGE_SCHEMA,
)
from apikeys.integrations.starlette import APIKeyMiddleware, APIKeys, to_response  # noqa: E402

# Both schemes only document the credentials in OpenAPI; the key itself is read
# by the core, from the headers the settings name.
_bearer_scheme = HTTPBearer(
    scheme_name="APIKeyBearer",
    description="An API key: `Authorization: Bearer <key>`",
    auto_error=False,
)
_header_scheme = APIKeyHeader(
    name="X-API-Key",
    scheme_name="APIKeyHeader",
    description="An API key in the `X-API-Key` header",
    auto_error=False,
)


def require_api_key(scopes: Iterable[str] | str = ()) -> Callable[..., Awaitable[VerifiedKey]]:
    """Return a dependency that verifies the request's key and returns it.

    Args:
        scopes: Scopes the key must hold (validated now, not per request).

    Example:
        ``key: VerifiedKey = Depends(require_api_key(["read:data"]))``
    """
    needed = required_scopes(scopes)

    async def api_key_dependency(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer_scheme),  # noqa: B008
        header: str | None = Security(_header_scheme),
    ) -> VerifiedKey:
        return await APIKeys.of(request.app).authenticate(request.scope, needed)

    return api_key_dependency


async def _management_caller(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Security(_bearer_scheme),  # noqa: B008
    header: str | None = Security(_header_scheme),
) -> VerifiedKey:
    keys = APIKeys.of(request.app)
    return await keys.authenticate(request.scope, keys.management_scopes)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    names = {
        401: "No API key",
        403: "Refused key, missing scope, or another user",
        404: "No such key for this user",
        422: "Invalid request",
        503: "Key store unavailable",
    }
    return {status: _json(ERROR_SCHEMA, names[status]) for status in statuses}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_CALLER = Depends(_management_caller)
_REASON_PARAMETER = _query("reason", {"type": "string", "maxLength": 500}, "Revocation reason")

management_router = APIRouter(tags=["api-keys"])
"""The ``/api-keys`` endpoints: ``app.include_router(management_router)``."""


@management_router.get(
    MANAGEMENT_PATH,
    summary="List the caller's API keys",
    response_class=Response,
    responses={
        200: _json(PAGE_SCHEMA, "One page of keys, newest first"),
        **_errors(401, 403, 422, 503),
    },
    openapi_extra={
        "parameters": [
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "Page size"),
            _query(
                "offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "Keys to skip"
            ),
            _query("includeInvalid", {"type": "boolean"}, "Include revoked and expired keys"),
        ]
    },
)
async def list_api_keys(request: Request, caller: VerifiedKey = _CALLER) -> Response:
    """List the caller's keys, never with secrets."""
    return await APIKeys.of(request.app).serve_management(request, caller)


@management_router.post(
    MANAGEMENT_PATH,
    summary="Create an API key for the caller's user",
    status_code=201,
    response_class=Response,
    responses={
        201: _json(NEW_KEY_SCHEMA, "The new key, with its secret shown this once"),
        **_errors(401, 403, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CREATE_BODY_SCHEMA}},
        }
    },
)
async def create_api_key(request: Request, caller: VerifiedKey = _CALLER) -> Response:
    """Create a key whose scopes the caller's key covers."""
    return await APIKeys.of(request.app).serve_management(request, caller)


@management_router.delete(
    MANAGEMENT_PATH + "/{key_id}",
    summary="Revoke (or delete) one of the caller's API keys",
    response_class=Response,
    responses={
        200: _json(KEY_SCHEMA, "The revoked key"),
        204: {"description": "Deleted (when management_delete is 'delete')"},
        **_errors(401, 403, 404, 422, 503),
    },
    openapi_extra={"parameters": [_REASON_PARAMETER]},
)
async def delete_api_key(request: Request, key_id: str, caller: VerifiedKey = _CALLER) -> Response:
    """Revoke a key by id (the id in the path)."""
    return await APIKeys.of(request.app).serve_management(request, caller, key_id)


@management_router.delete(
    MANAGEMENT_PATH,
    summary="Revoke (or delete) a key named in the body or the query",
    response_class=Response,
    responses={
        200: _json(KEY_SCHEMA, "The revoked key"),
        204: {"description": "Deleted (when management_delete is 'delete')"},
        **_errors(401, 403, 404, 422, 503),
    },
    openapi_extra={
        "parameters": [_query("id", {"type": "string"}, "The key id"), _REASON_PARAMETER],
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": DELETE_BODY_SCHEMA}},
        },
    },
)
async def delete_api_key_by_body(request: Request, caller: VerifiedKey = _CALLER) -> Response:
    """Revoke a key by id, the id in the body (``{"id": ...}``) or the query (``?id=``)."""
    return await APIKeys.of(request.app).serve_management(request, caller)


__all__ = [
    "APIKeyMiddleware",
    "APIKeys",
    "IntegrationSettings",
    "management_router",
    "require_api_key",
    "to_response",
]
