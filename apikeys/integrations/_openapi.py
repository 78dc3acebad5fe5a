"""OpenAPI descriptions of the ``/api-keys`` endpoints, framework-free.

An adapter that publishes an OpenAPI document (FastAPI, or a Django project
with an OpenAPI generator) takes each operation from
:data:`MANAGEMENT_OPERATIONS` instead of describing it again. The bodies are
read by the core, not by the framework, so these schemas only document them.
"""

from __future__ import annotations

from typing import Any, Final

from apikeys._arguments import MAX_NAME_LENGTH, MAX_PAGE_SIZE, MAX_REASON_LENGTH
from apikeys._keylimits import MAX_LIMIT, MAX_QUOTA_PERIOD, MAX_RATE_WINDOW
from apikeys._scopes import MAX_SCOPE_LENGTH, MAX_SCOPES
from apikeys.integrations._management import MANAGEMENT_PATH, MAX_OFFSET

# The scope syntax of apikeys._scopes.
SCOPE_PATTERN: Final = r"^[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)*(:\*)?$"


RATE_LIMIT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["limit", "window"],
    "properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        "window": {
            "type": "integer",
            "minimum": 1,
            "maximum": int(MAX_RATE_WINDOW.total_seconds()),
        },
    },
}
QUOTA_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["limit"],
    "properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        "period": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": int(MAX_QUOTA_PERIOD.total_seconds()),
        },
    },
}


def _key_schema(*, with_secret: bool = False) -> dict[str, Any]:
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    properties: dict[str, Any] = {
        "id": {"type": "string"},
        "userId": {"type": "string"},
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "createdAt": {"type": "string", "format": "date-time"},
        "expiresAt": nullable_time,
        "lastUsedAt": nullable_time,
        "revokedAt": nullable_time,
        "revocationReason": {"type": ["string", "null"]},
        "createdBy": {
            "type": ["string", "null"],
            "description": "The id of the key that created this one through /api-keys",
        },
        "active": {"type": "boolean"},
        "status": {"type": "string", "enum": ["active", "revoked", "expired"]},
        "hint": {"type": "string"},
        "metadata": {"type": "object"},
        "rateLimit": {
            "oneOf": [RATE_LIMIT_SCHEMA, {"type": "null"}],
            "description": "At most `limit` calls in each `window` seconds, or null",
        },
        "quota": {
            "oneOf": [QUOTA_SCHEMA, {"type": "null"}],
            "description": "At most `limit` credits in each `period` seconds (null: never"
            " refilled), or null",
        },
    }
    if with_secret:
        properties["secret"] = {"type": "string", "description": "Shown only this once"}
    return {"type": "object", "properties": properties, "required": sorted(properties)}


CREATE_BODY_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
        "scopes": {
            "type": "array",
            "items": {"type": "string", "maxLength": MAX_SCOPE_LENGTH, "pattern": SCOPE_PATTERN},
            "maxItems": MAX_SCOPES,
        },
        "expiration": {
            "type": ["string", "null"],
            "description": "ISO 8601 date (valid through that day, UTC) or date-time",
        },
        "userId": {"type": "string", "description": "Must be the caller's own user id"},
        "metadata": {"type": "object"},
        "rateLimit": {
            "oneOf": [RATE_LIMIT_SCHEMA, {"type": "null"}],
            "description": "Left out: the calling key's. No looser than the calling key's",
        },
        "quota": {
            "oneOf": [QUOTA_SCHEMA, {"type": "null"}],
            "description": "Left out: the calling key's. No looser than the calling key's;"
            " a period left out or null makes a one-off balance",
        },
    },
}
DELETE_BODY_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "reason": {"type": "string", "maxLength": MAX_REASON_LENGTH},
    },
}
KEY_SCHEMA: Final = _key_schema()
NEW_KEY_SCHEMA: Final = _key_schema(with_secret=True)
PAGE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": KEY_SCHEMA},
        "total": {"type": "integer"},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
        "hasMore": {"type": "boolean"},
    },
    "required": ["items", "total", "limit", "offset", "hasMore"],
}
ERROR_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "missingScopes": {"type": "array", "items": {"type": "string"}},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "retryAfter": {"type": "integer"},
    },
    "required": ["code", "message"],
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_DESCRIPTIONS = {
    401: "No API key",
    403: "Refused key, no keys:manage scope (or another missing scope), another user's id,"
    " or an expiry past the caller's",
    404: "No such key for this user",
    422: "Invalid request; every field error listed",
    429: "Too many keys created for this user; retry after Retry-After seconds",
    503: "Key store unavailable",
}


def _errors(*statuses: int) -> dict[int, dict[str, Any]]:
    return {status: _json(ERROR_SCHEMA, _ERROR_DESCRIPTIONS[status]) for status in statuses}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_REASON = _query("reason", {"type": "string", "maxLength": MAX_REASON_LENGTH}, "Revocation reason")
_REVOKED = {
    200: _json(KEY_SCHEMA, "The revoked key"),
    204: {"description": "Deleted (when management_delete is 'delete')"},
    **_errors(401, 403, 404, 422, 503),
}

MANAGEMENT_OPERATIONS: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("get", MANAGEMENT_PATH): {
        "summary": "List the caller's API keys",
        "status": 200,
        "responses": {
            200: _json(PAGE_SCHEMA, "One page of keys, newest first"),
            **_errors(401, 403, 422, 503),
        },
        "parameters": [
            _query(
                "limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}, "Page size"
            ),
            _query(
                "offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "Keys to skip"
            ),
            _query("includeInvalid", {"type": "boolean"}, "Include revoked and expired keys"),
        ],
    },
    ("post", MANAGEMENT_PATH): {
        "summary": "Create an API key for the caller's user",
        "status": 201,
        "responses": {
            201: _json(NEW_KEY_SCHEMA, "The new key, with its secret shown this once"),
            **_errors(401, 403, 422, 429, 503),
        },
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CREATE_BODY_SCHEMA}},
        },
    },
    ("delete", MANAGEMENT_PATH + "/{key_id}"): {
        "summary": "Revoke (or delete) one of the caller's API keys",
        "status": 200,
        "responses": _REVOKED,
        "parameters": [_REASON],
    },
    ("delete", MANAGEMENT_PATH): {
        "summary": "Revoke (or delete) a key named in the body or the query",
        "status": 200,
        "responses": _REVOKED,
        "parameters": [_query("id", {"type": "string"}, "The key id"), _REASON],
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": DELETE_BODY_SCHEMA}},
        },
    },
}
"""Each operation by ``(method, path)``: ``summary``, success ``status``,
``responses`` (by status), and OpenAPI ``parameters`` / ``requestBody``."""


__all__ = [
    "CREATE_BODY_SCHEMA",
    "DELETE_BODY_SCHEMA",
    "ERROR_SCHEMA",
    "KEY_SCHEMA",
    "MANAGEMENT_OPERATIONS",
    "NEW_KEY_SCHEMA",
    "PAGE_SCHEMA",
    "SCOPE_PATTERN",
]
