"""The ``/api-keys`` management endpoints, written once for every framework.

:func:`management_flow` turns a :class:`ManagementRequest` (method, path id,
query, raw body and the already verified caller) into a
:class:`~apikeys.integrations._core.CoreResponse`, yielding the manager calls
it needs; :func:`handle_management_sync` / :func:`handle_management_async`
drive it with a sync or an async manager and map every error.

Rules, enforced before anything is written:

- The caller holds the management scope (``settings.management_scopes``,
  :data:`apikeys.MANAGEMENT_SCOPE` by default), else 403
  ``insufficient_scope``. The adapters check it when they authenticate; the
  flow checks it again, so no adapter can forget it.
- A caller only ever reaches its own owner's keys: another owner's key id
  answers 404 exactly like an unknown id, so ids cannot be probed.
- ``userId`` in a body must be the caller's own (else 403).
- A new key's scopes must be covered by the caller's (no escalation; 403
  ``insufficient_scope`` naming what is missing), and it cannot outlive the
  caller: without an expiration it gets the caller's; a later one is 403.
- Creations are counted per owner (``settings.creation_limiter``): past
  ``max_key_creations`` in a burst, 429 with ``Retry-After``; a refused or
  invalid request counts nothing.
- A new key records the caller as its creator (``createdBy``): revoking or
  deleting the caller later revokes it too, and the keys it made in turn.
- Bodies are capped in size and checked field by field: wrong types, unknown
  or repeated fields, past expirations → 422 listing every field error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from apikeys._arguments import (
    MAX_PAGE_SIZE,
    check_key_id,
    check_metadata,
    check_name,
    check_reason,
)
from apikeys._errors import (
    APIKeysError,
    FieldError,
    ForeignUserError,
    InsufficientScopeError,
    InvalidInputError,
    InvalidRequestError,
    LifetimeEscalationError,
)
from apikeys._expiry import parse_expiration
from apikeys._flow import Flow
from apikeys._json import key_to_json, new_key_to_json, page_to_json
from apikeys._keystate import check_scopes
from apikeys._models import APIKey, APIKeyPage, NewAPIKey, VerifiedKey
from apikeys._protocols import AsyncKeyManager, KeyManager
from apikeys._scopes import missing_scopes, normalize_scopes
from apikeys.integrations._core import (
    CoreResponse,
    HeaderSource,
    IntegrationSettings,
    ManagerCall,
    _pairs,
    error_response,
    run_with_async_manager,
    run_with_sync_manager,
)

_T = TypeVar("_T")

MANAGEMENT_PATH: Final = "/api-keys"
# Methods every /api-keys route is given to the core, served or not: the ones it does not
# serve get the same JSON 405 with the route's own Allow in every framework, rather than
# each framework's own page (HTML in Flask, another Allow in FastAPI).
ROUTED_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_PAGE_SIZE: Final = 50
# Responses may carry a secret (POST) or a list of keys: no cache may keep them.
_NO_STORE = (("Cache-Control", "no-store"),)
_INTEGER_RE = re.compile(r"[0-9]{1,9}")
MAX_OFFSET: Final = 999_999_999
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}

_CREATE_FIELDS = frozenset({"name", "scopes", "expiration", "userId", "metadata"})
_DELETE_FIELDS = frozenset({"id", "reason"})


@dataclass(frozen=True, slots=True)
class ManagementRequest:
    """A management call as plain values, read from any framework's request.

    Attributes:
        method: ``GET``, ``POST`` or ``DELETE``.
        caller: The verified key making the call.
        key_id: The ``{id}`` of ``/api-keys/{id}``, if the path has one.
        query: Query parameters (a mapping or ``(name, value)`` pairs).
        body: The raw request body, at most ``max_body_bytes + 1`` bytes of it.
    """

    method: str
    caller: VerifiedKey
    key_id: str | None = None
    query: HeaderSource = ()
    body: bytes = b""


def _first_values(query: HeaderSource) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in _pairs(query):
        values.setdefault(name, value)
    return values


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise InvalidRequestError([FieldError(name, "appears more than once")])
        result[name] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(body: bytes, settings: IntegrationSettings) -> dict[str, Any]:
    """Decode a request body that must be one JSON object (an empty body is ``{}``).

    Raises:
        InvalidRequestError: The body is too large, not UTF-8 JSON, nested too
            deeply, not an object, or repeats a field.
    """
    if len(body) > settings.max_body_bytes:
        raise InvalidRequestError(
            [FieldError("body", f"must be at most {settings.max_body_bytes} bytes")]
        )
    if not body.strip():
        return {}
    try:
        decoded = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_refuse_constant,
        )
    except InvalidRequestError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequestError([FieldError("body", "must be a JSON object")]) from None
    if not isinstance(decoded, dict):
        raise InvalidRequestError([FieldError("body", "must be a JSON object")])
    return decoded


def _unknown_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> list[FieldError]:
    return [FieldError(name, "unknown field") for name in sorted(set(body) - allowed)]


def _page(query: Mapping[str, str]) -> tuple[int, int, bool]:
    errors: list[FieldError] = []
    limit, offset, include_invalid = DEFAULT_PAGE_SIZE, 0, False
    if "limit" in query:
        text = query["limit"].strip()
        if _INTEGER_RE.fullmatch(text) and 1 <= int(text) <= MAX_PAGE_SIZE:
            limit = int(text)
        else:
            errors.append(FieldError("limit", f"must be an integer from 1 to {MAX_PAGE_SIZE}"))
    if "offset" in query:
        text = query["offset"].strip()
        if _INTEGER_RE.fullmatch(text):
            offset = int(text)
        else:
            errors.append(FieldError("offset", "must be a non-negative integer"))
    if "includeInvalid" in query:
        flag = _BOOLEANS.get(query["includeInvalid"].strip().lower())
        if flag is None:
            errors.append(FieldError("includeInvalid", "must be true or false"))
        else:
            include_invalid = flag
    if errors:
        raise InvalidRequestError(errors)
    return limit, offset, include_invalid


@dataclass(frozen=True, slots=True)
class _CreateArguments:
    name: str
    scopes: tuple[str, ...]
    expiration: datetime | None
    metadata: dict[str, Any]


def _field(
    errors: list[FieldError], name: str, check: Callable[[Any], _T], value: object
) -> _T | None:
    """Run one core validator, collecting its error under the JSON field ``name``."""
    try:
        return check(value)
    except InvalidInputError as exc:
        errors.append(FieldError(name, exc.message))
        return None


def _parse_create(body: Mapping[str, Any], caller: VerifiedKey) -> _CreateArguments:
    errors = _unknown_fields(body, _CREATE_FIELDS)
    name = None
    if "name" in body:
        name = _field(errors, "name", check_name, body["name"])
    else:
        errors.append(FieldError("name", "is required"))
    scopes_value = body.get("scopes", [])
    scopes: tuple[str, ...] = ()
    if isinstance(scopes_value, str | list):
        scopes = _field(errors, "scopes", normalize_scopes, scopes_value) or ()
    else:
        errors.append(FieldError("scopes", "must be a list of strings"))
    expiration_value = body.get("expiration")
    expiration = None
    if expiration_value is not None:
        if isinstance(expiration_value, str):
            expiration = _field(errors, "expiration", parse_expiration, expiration_value)
        else:
            errors.append(
                FieldError("expiration", "must be an ISO 8601 date or date-time, or null")
            )
    metadata_value = body.get("metadata")
    metadata: dict[str, Any] | None = {}
    if metadata_value is not None and not isinstance(metadata_value, dict):
        errors.append(FieldError("metadata", "must be a JSON object"))
    else:
        metadata = _field(errors, "metadata", check_metadata, metadata_value)
    user_id = body.get("userId")
    if user_id is not None and not isinstance(user_id, str):
        errors.append(FieldError("userId", "must be a string"))
    if errors or name is None:
        raise InvalidRequestError(errors)
    if user_id is not None and user_id != caller.user_id:
        raise ForeignUserError(key_id=caller.key_id)
    escalation = missing_scopes(caller.scopes, scopes)
    if escalation:
        raise InsufficientScopeError(
            "A new key's scopes must be covered by the calling key's scopes",
            key_id=caller.key_id,
            missing_scopes=escalation,
        )
    if caller.expires_at is not None:
        # A key never outlives the key that made it: else a short-lived key could
        # mint a permanent one and keep its access for ever.
        if expiration is None:
            expiration = caller.expires_at
        elif expiration > caller.expires_at:
            raise LifetimeEscalationError(key_id=caller.key_id)
    return _CreateArguments(name, scopes, expiration, metadata or {})


def _delete_target(request: ManagementRequest, body: Mapping[str, Any]) -> tuple[str, str | None]:
    query = _first_values(request.query)
    errors = _unknown_fields(body, _DELETE_FIELDS)
    candidates = [
        value for value in (request.key_id, body.get("id"), query.get("id")) if value is not None
    ]
    if not candidates:
        errors.append(FieldError("id", "is required, in the path, the body or the query"))
    elif any(value != candidates[0] for value in candidates):
        errors.append(FieldError("id", "differs between the path, the body and the query"))
    key_id = _field(errors, "id", check_key_id, candidates[0]) if candidates else None
    reason_value = body.get("reason", query.get("reason"))
    reason = _field(errors, "reason", check_reason, reason_value)
    if errors or key_id is None:
        raise InvalidRequestError(errors)
    return key_id, reason


def management_flow(
    request: ManagementRequest, settings: IntegrationSettings
) -> Flow[ManagerCall, CoreResponse]:
    """Serve one ``/api-keys`` request for an already verified caller.

    Raises:
        APIKeysError: Any refusal; :func:`handle_management_sync` and
            :func:`handle_management_async` map it to a response.
    """
    caller = check_scopes(request.caller, settings.management_scopes)
    method = request.method.upper()
    if method == "HEAD":
        method = "GET"  # frameworks route HEAD to GET views; the server drops the body
    if method == "GET" and request.key_id is None:
        limit, offset, include_invalid = _page(_first_values(request.query))
        page: APIKeyPage = yield ManagerCall(
            "list_api_keys",
            (caller.user_id,),
            {"include_invalid": include_invalid, "limit": limit, "offset": offset},
        )
        return CoreResponse(200, page_to_json(page), _NO_STORE)
    if method == "POST" and request.key_id is None:
        arguments = _parse_create(parse_json_body(request.body, settings), caller)
        limiter = settings.creation_limiter
        if limiter is not None:
            limiter.take(caller.user_id)
        new_key: NewAPIKey = yield ManagerCall(
            "create_api_key",
            (caller.user_id, arguments.name, arguments.scopes, arguments.expiration),
            {"metadata": arguments.metadata, "created_by": caller.key_id},
        )
        return CoreResponse(201, new_key_to_json(new_key), _NO_STORE)
    if method == "DELETE":
        key_id, reason = _delete_target(request, parse_json_body(request.body, settings))
        # The owner goes into the lookup itself: another owner's id is the same miss,
        # with the same answer and the same work, as an unknown id.
        if settings.management_delete == "delete":
            yield ManagerCall("delete_api_key", (key_id,), {"user_id": caller.user_id})
            return CoreResponse(204, None, _NO_STORE)
        revoked: APIKey = yield ManagerCall(
            "revoke_api_key", (key_id,), {"reason": reason, "user_id": caller.user_id}
        )
        return CoreResponse(200, key_to_json(revoked), _NO_STORE)
    allowed = "DELETE" if request.key_id is not None else "GET, POST, DELETE"
    return CoreResponse(
        405,
        {"code": "method_not_allowed", "message": "Method not allowed"},
        (("Allow", allowed),),
    )


def handle_management_sync(
    manager: KeyManager, request: ManagementRequest, settings: IntegrationSettings
) -> CoreResponse:
    """Serve one management request with a synchronous manager; errors become responses."""
    try:
        return run_with_sync_manager(management_flow(request, settings), manager)
    except APIKeysError as exc:
        return error_response(exc, settings)


async def handle_management_async(
    manager: AsyncKeyManager, request: ManagementRequest, settings: IntegrationSettings
) -> CoreResponse:
    """Serve one management request with an async manager; errors become responses."""
    try:
        return await run_with_async_manager(management_flow(request, settings), manager)
    except APIKeysError as exc:
        return error_response(exc, settings)


__all__ = [
    "MANAGEMENT_PATH",
    "MAX_OFFSET",
    "ROUTED_METHODS",
    "ForeignUserError",
    "LifetimeEscalationError",
    "ManagementRequest",
    "handle_management_async",
    "handle_management_sync",
    "key_to_json",
    "management_flow",
    "new_key_to_json",
    "parse_json_body",
]
