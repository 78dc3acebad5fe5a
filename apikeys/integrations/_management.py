"""The ``/api-keys`` management endpoints, written once for every framework.

:func:`management_flow` turns a :class:`ManagementRequest` (method, path id,
query, raw body and the already verified caller) into a
:class:`~apikeys.integrations._responses.CoreResponse`, yielding the manager
call it needs as a typed :data:`ManagerCall`; :func:`handle_management_sync` /
:func:`handle_management_async` perform it with a sync or an async manager
and map every error.

Rules, enforced before anything is written:

- The caller holds the management scope (``settings.management_scopes``,
  :data:`apikeys.MANAGEMENT_SCOPE` by default), else 403
  ``insufficient_scope``. The adapters check it when they authenticate; the
  flow checks it again, so no adapter can forget it.
- A caller only ever reaches its own owner's keys: another owner's key id
  answers 404 exactly like an unknown id, so ids cannot be probed.
- ``userId`` in a body must be the caller's own (else 403).
- A new key's scopes must be covered by the caller's, and it cannot outlive
  the caller (see :mod:`~apikeys.integrations._management_arguments`).
- Creations are counted per owner (the ``creation`` limiter of the app's
  :class:`~apikeys.integrations._settings.Limiters`): past
  ``max_key_creations`` in a burst, 429 with ``Retry-After``; a refused or
  invalid request counts nothing.
- A new key records the caller as its creator (``createdBy``): revoking or
  deleting the caller later revokes it too, and the keys it made in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from apikeys._creationlimit import CreationLimiter
from apikeys._errors import APIKeysError, ForeignUserError, LifetimeEscalationError
from apikeys._flow import Flow, run_async, run_sync
from apikeys._json import key_to_json, new_key_to_json, page_to_json
from apikeys._keylimits import Quota, RateLimit
from apikeys._keystate import check_scopes
from apikeys._models import APIKey, APIKeyPage, NewAPIKey, VerifiedKey
from apikeys._protocols import AsyncKeyManager, KeyManager
from apikeys.integrations._clients import HeaderSource
from apikeys.integrations._management_arguments import (
    MAX_OFFSET,
    create_arguments,
    delete_arguments,
    first_values,
    page_arguments,
    parse_json_body,
)
from apikeys.integrations._responses import CoreResponse, error_response
from apikeys.integrations._settings import IntegrationSettings, Limiters

MANAGEMENT_PATH: Final = "/api-keys"
# Methods every /api-keys route is given to the core, served or not: the ones it does not
# serve get the same JSON 405 with the route's own Allow in every framework, rather than
# each framework's own page (HTML in Flask, another Allow in FastAPI).
ROUTED_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Responses may carry a secret (POST) or a list of keys: no cache may keep them.
_NO_STORE = (("Cache-Control", "no-store"),)


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


# The manager calls the flow asks for, one class per manager method. Their repr
# is the default one: it shows no argument.


@dataclass(frozen=True, slots=True, repr=False)
class ListKeys:
    """``list_api_keys`` of the caller's owner."""

    user_id: str
    include_invalid: bool
    limit: int
    offset: int

    def call_sync(self, manager: KeyManager) -> APIKeyPage:
        return manager.list_api_keys(
            self.user_id, include_invalid=self.include_invalid, limit=self.limit, offset=self.offset
        )

    async def call_async(self, manager: AsyncKeyManager) -> APIKeyPage:
        return await manager.list_api_keys(
            self.user_id, include_invalid=self.include_invalid, limit=self.limit, offset=self.offset
        )


@dataclass(frozen=True, slots=True, repr=False)
class CreateKey:
    """``create_api_key`` for the caller's owner, recording the caller as creator."""

    user_id: str
    name: str
    scopes: tuple[str, ...]
    expiration: datetime | None
    metadata: dict[str, Any]
    created_by: str
    rate_limit: RateLimit | None
    quota: Quota | None

    def call_sync(self, manager: KeyManager) -> NewAPIKey:
        return manager.create_api_key(
            self.user_id, self.name, self.scopes, self.expiration,
            metadata=self.metadata, created_by=self.created_by,
            rate_limit=self.rate_limit, quota=self.quota,
        )  # fmt: skip

    async def call_async(self, manager: AsyncKeyManager) -> NewAPIKey:
        return await manager.create_api_key(
            self.user_id, self.name, self.scopes, self.expiration,
            metadata=self.metadata, created_by=self.created_by,
            rate_limit=self.rate_limit, quota=self.quota,
        )  # fmt: skip


@dataclass(frozen=True, slots=True, repr=False)
class RevokeKey:
    """``revoke_api_key`` of one of the owner's keys."""

    key_id: str
    reason: str | None
    user_id: str

    def call_sync(self, manager: KeyManager) -> APIKey:
        return manager.revoke_api_key(self.key_id, reason=self.reason, user_id=self.user_id)

    async def call_async(self, manager: AsyncKeyManager) -> APIKey:
        return await manager.revoke_api_key(self.key_id, reason=self.reason, user_id=self.user_id)


@dataclass(frozen=True, slots=True, repr=False)
class DeleteKey:
    """``delete_api_key`` of one of the owner's keys."""

    key_id: str
    user_id: str

    def call_sync(self, manager: KeyManager) -> None:
        manager.delete_api_key(self.key_id, user_id=self.user_id)

    async def call_async(self, manager: AsyncKeyManager) -> None:
        await manager.delete_api_key(self.key_id, user_id=self.user_id)


@dataclass(frozen=True, slots=True, repr=False)
class TakeCreation:
    """Count one creation for the owner, or refuse it (the counter may be in Redis)."""

    limiter: CreationLimiter
    user_id: str

    def call_sync(self, manager: KeyManager) -> None:
        self.limiter.take(self.user_id)

    async def call_async(self, manager: AsyncKeyManager) -> None:
        await self.limiter.take_async(self.user_id)


ManagerCall = ListKeys | CreateKey | RevokeKey | DeleteKey | TakeCreation
"""A call :func:`management_flow` asks its driver to perform: the manager's, or a counter's."""


def management_flow(
    request: ManagementRequest, settings: IntegrationSettings, creation: CreationLimiter | None
) -> Flow[ManagerCall, CoreResponse]:
    """Serve one ``/api-keys`` request for an already verified caller.

    ``creation`` counts ``POST`` creations per owner (``None``: no limit).

    Raises:
        APIKeysError: Any refusal; :func:`handle_management_sync` and
            :func:`handle_management_async` map it to a response.
    """
    caller = check_scopes(request.caller, settings.management_scopes)
    method = request.method.upper()
    if method == "HEAD":
        method = "GET"  # frameworks route HEAD to GET views; the server drops the body
    if method == "GET" and request.key_id is None:
        limit, offset, include_invalid = page_arguments(first_values(request.query))
        page: APIKeyPage = yield ListKeys(caller.user_id, include_invalid, limit, offset)
        return CoreResponse(200, page_to_json(page), _NO_STORE)
    if method == "POST" and request.key_id is None:
        arguments = create_arguments(parse_json_body(request.body, settings), caller)
        if creation is not None:
            yield TakeCreation(creation, caller.user_id)
        new_key: NewAPIKey = yield CreateKey(
            caller.user_id, arguments.name, arguments.scopes, arguments.expiration,
            arguments.metadata, caller.id, arguments.rate_limit, arguments.quota,
        )  # fmt: skip
        return CoreResponse(201, new_key_to_json(new_key), _NO_STORE)
    if method == "DELETE":
        body = parse_json_body(request.body, settings)
        key_id, reason = delete_arguments(request.key_id, request.query, body)
        # The owner goes into the lookup itself: another owner's id is the same miss,
        # with the same answer and the same work, as an unknown id.
        if settings.management_delete == "delete":
            yield DeleteKey(key_id, caller.user_id)
            return CoreResponse(204, None, _NO_STORE)
        revoked: APIKey = yield RevokeKey(key_id, reason, caller.user_id)
        return CoreResponse(200, key_to_json(revoked), _NO_STORE)
    allowed = "DELETE" if request.key_id is not None else "GET, POST, DELETE"
    return CoreResponse(
        405,
        {"code": "method_not_allowed", "message": "Method not allowed"},
        (("Allow", allowed),),
    )


def handle_management_sync(
    manager: KeyManager,
    request: ManagementRequest,
    settings: IntegrationSettings,
    *,
    limiters: Limiters,
) -> CoreResponse:
    """Serve one management request with a synchronous manager; errors become responses."""
    flow = management_flow(request, settings, limiters.creation)
    try:
        return run_sync(flow, lambda call: call.call_sync(manager))
    except APIKeysError as exc:
        return error_response(exc, settings)


async def handle_management_async(
    manager: AsyncKeyManager,
    request: ManagementRequest,
    settings: IntegrationSettings,
    *,
    limiters: Limiters,
) -> CoreResponse:
    """Serve one management request with an async manager; errors become responses."""
    flow = management_flow(request, settings, limiters.creation)
    try:
        return await run_async(flow, lambda call: call.call_async(manager))
    except APIKeysError as exc:
        return error_response(exc, settings)


__all__ = [
    "MANAGEMENT_PATH",
    "MAX_OFFSET",
    "ROUTED_METHODS",
    "CreateKey",
    "DeleteKey",
    "ForeignUserError",
    "LifetimeEscalationError",
    "ListKeys",
    "ManagementRequest",
    "ManagerCall",
    "RevokeKey",
    "handle_management_async",
    "handle_management_sync",
    "key_to_json",
    "management_flow",
    "new_key_to_json",
    "parse_json_body",
]
