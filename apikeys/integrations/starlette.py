"""API-key authentication for Starlette apps (the base of the FastAPI integration).

Example:
    >>> from starlette.applications import Starlette
    >>> from starlette.routing import Mount
    >>> import apikeys
    >>> from apikeys.integrations.starlette import APIKeys, APIKeyMiddleware, management_router
    >>> app = Starlette(routes=[Mount("", app=management_router)])
    >>> keys = APIKeys(app, manager=apikeys.create_async_key_manager("sqlite:///:memory:"))
    >>> app.add_middleware(APIKeyMiddleware, exempt_paths=["/health"])

The verified key is ``request.state.api_key``. Only async managers are
accepted: nothing here blocks the event loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from apikeys._default import get_async_key_manager
from apikeys._errors import APIKeysError, ConfigurationError, MissingDependencyError
from apikeys._models import VerifiedKey
from apikeys._protocols import AsyncKeyManager
from apikeys.integrations._authentication import (
    API_KEY_ATTRIBUTE,
    NOT_ADMITTED,
    Admission,
    admit_async,
    is_async_manager,
    required_scopes,
    route_cost,
)
from apikeys.integrations._credentials import ASGICredentials
from apikeys.integrations._management import (
    MANAGEMENT_PATH,
    ROUTED_METHODS,
    ManagementRequest,
    handle_management_async,
)
from apikeys.integrations._responses import CoreResponse, error_response
from apikeys.integrations._settings import (
    IntegrationSettings,
    Limiters,
    check_exempt_paths,
    is_exempt,
)

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route, Router
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:
    raise MissingDependencyError("starlette", "starlette") from exc

_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])
# The ASGI extension that lets a refused WebSocket handshake get a real HTTP answer.
_DENIAL = "websocket.http.response"
# Where a connection's Admission (its verified key, what it was charged) is kept:
# its own scope, never the shared state.
_ADMISSION_SCOPE_KEY = "apikeys.admission"


def _admission(scope: Scope) -> Admission:
    admitted = scope.get(_ADMISSION_SCOPE_KEY)
    return admitted if isinstance(admitted, Admission) else NOT_ADMITTED


class _RateLimitFields:
    """Pure-ASGI layer adding the ``RateLimit`` header fields of the request's key to its response.

    Installed by :meth:`APIKeys.init_app` around the whole app, so the fields
    reach every answer of a protected route: the handler's, an error
    handler's, a 429. A response that already carries them is left alone.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                fields = _admission(scope).fields
                if fields:
                    headers = list(message.get("headers", ()))
                    if not any(name.lower() == b"ratelimit" for name, _ in headers):
                        headers += [(n.lower().encode(), v.encode()) for n, v in fields]
                        message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_fields)


def to_response(core: CoreResponse) -> Response:
    """Turn a core response into a Starlette one."""
    return Response(
        content=core.content(),
        status_code=core.status,
        headers=dict(core.headers),
        media_type=core.media_type if core.body is not None else None,
    )


class APIKeys:
    """Binds an async key manager and :class:`IntegrationSettings` to an app.

    ``APIKeys(app)`` stores itself on ``app.state.apikeys`` and installs the
    handler that turns every :class:`~apikeys.APIKeysError` into its JSON
    answer. Without a ``manager`` it uses :func:`apikeys.get_async_key_manager`,
    built from ``APIKEYS_BACKEND`` and friends on first use.

    Args:
        app: A Starlette or FastAPI app; or call :meth:`init_app` later.
        manager: An async manager (``apikeys.create_async_key_manager(url)``).
        settings: Integration settings; or give their fields as keywords.

    Attributes:
        settings: The :class:`IntegrationSettings` in use.
        limiters: The app's per-client and per-owner counters, built from them.
    """

    def __init__(
        self,
        app: Any = None,
        *,
        manager: AsyncKeyManager | None = None,
        settings: IntegrationSettings | None = None,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise ConfigurationError("pass either settings or keyword options, not both")
        if manager is not None and not is_async_manager(manager):
            raise ConfigurationError(
                "FastAPI and Starlette need an async manager: apikeys.create_async_key_manager(...)"
            )
        self.settings = settings or IntegrationSettings.from_mapping(options)
        self.limiters = Limiters.of(self.settings)
        self._manager = manager
        if app is not None:
            self.init_app(app)

    @property
    def manager(self) -> AsyncKeyManager:
        """The async manager in use."""
        return self._manager if self._manager is not None else get_async_key_manager()

    @property
    def management_scopes(self) -> tuple[str, ...]:
        """What every ``/api-keys`` call must hold."""
        return self.settings.management_scopes

    def init_app(self, app: Any) -> None:
        """Attach to ``app``: ``app.state.apikeys``, the error handler and the
        layer adding the ``RateLimit`` header fields to responses."""
        app.state.apikeys = self
        app.add_exception_handler(APIKeysError, self._handle_error)
        app.add_middleware(_RateLimitFields)

    @classmethod
    def of(cls, app: Any) -> APIKeys:
        """Return the :class:`APIKeys` attached to ``app``.

        Raises:
            ConfigurationError: ``APIKeys(app)`` was never called.
        """
        keys = getattr(getattr(app, "state", None), "apikeys", None)
        if not isinstance(keys, APIKeys):
            raise ConfigurationError("call apikeys.integrations.fastapi.APIKeys(app) first")
        return keys

    async def authenticate(
        self, scope: Scope, scopes: tuple[str, ...] = (), cost: int = 1
    ) -> VerifiedKey:
        """Verify the key of the request in ``scope``, spend ``cost``, and publish it on its state.

        A key already verified for this very request or WebSocket connection
        (by the middleware, then a dependency) is reused, checked for
        ``scopes`` and charged only what ``cost`` adds to what it was charged
        (see :func:`~apikeys.integrations._authentication.still_to_charge`). It is
        kept in the connection's own scope, which no other request shares;
        ``request.state`` is only written: its values start as a copy of the
        lifespan state, common to every request.
        """

        def store(admitted: Admission) -> None:
            scope[_ADMISSION_SCOPE_KEY] = admitted

        verified = await admit_async(
            self.manager, ASGICredentials(scope), self.settings, scopes, cost,
            admitted=_admission(scope), store=store, limiters=self.limiters, source="starlette",
        )  # fmt: skip
        state: dict[str, Any] = scope.setdefault("state", {})
        state[API_KEY_ATTRIBUTE] = verified
        return verified

    def response_for(self, exc: APIKeysError, scope: Scope | None = None) -> Response:
        """The JSON answer to an error, with its status and headers, and the
        ``RateLimit`` header fields of the key of the request in ``scope``, if any."""
        core = error_response(exc, self.settings)
        fields = () if scope is None else _admission(scope).fields
        if fields:
            core = replace(core, headers=core.headers + fields)
        return to_response(core)

    async def _handle_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIKeysError)  # registered for APIKeysError only
        return self.response_for(exc, request.scope)

    async def read_body(self, request: Request) -> bytes:
        """Read at most ``max_body_bytes + 1`` bytes: the core refuses anything longer."""
        limit = self.settings.max_body_bytes
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                break
        return bytes(body)

    async def serve_management(
        self, request: Request, caller: VerifiedKey, key_id: str | None = None
    ) -> Response:
        """Answer one ``/api-keys`` call for an authenticated caller."""
        management = ManagementRequest(
            method=request.method,
            caller=caller,
            key_id=key_id,
            query=request.query_params.multi_items(),
            body=await self.read_body(request),
        )
        core = await handle_management_async(
            self.manager, management, self.settings, limiters=self.limiters
        )
        return to_response(core)


class APIKeyMiddleware:
    """Pure-ASGI middleware that requires a valid key on every request but exempt paths.

    The verified key is put on ``request.state.api_key``. A WebSocket
    handshake without a valid key gets the same JSON answer as HTTP where the
    server supports the denial-response extension (uvicorn does), and is
    closed with code 1008 elsewhere.

    Args:
        app: The ASGI app to protect.
        apikeys: The :class:`APIKeys` to use; by default the app's own.
        scopes: Scopes every request must hold.
        exempt_paths: Paths let through without a key (``/health``,
            ``/docs/*``); by default ``settings.exempt_paths``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        apikeys: APIKeys | None = None,
        scopes: Iterable[str] | str = (),
        exempt_paths: Sequence[str] | None = None,
    ) -> None:
        self.app = app
        self.apikeys = apikeys
        self.scopes = required_scopes(scopes)
        self.exempt_paths = check_exempt_paths(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        keys = self.apikeys or APIKeys.of(scope.get("app"))
        exempt = self.exempt_paths if self.exempt_paths is not None else keys.settings.exempt_paths
        if is_exempt(scope["path"], exempt):
            await self.app(scope, receive, send)
            return
        try:
            await keys.authenticate(scope, self.scopes)
        except APIKeysError as exc:
            if scope["type"] == "websocket" and _DENIAL not in scope.get("extensions", {}):
                # The server cannot send an HTTP answer to a WebSocket handshake.
                await send({"type": "websocket.close", "code": 1008})
            else:
                await keys.response_for(exc, scope)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def require_api_key(
    scopes: Iterable[str] | str = (), *, cost: int = 1
) -> Callable[[_Endpoint], _Endpoint]:
    """Decorate a Starlette endpoint ``(request) -> response`` to require a key.

    FastAPI apps use the dependency of :mod:`apikeys.integrations.fastapi` instead.

    Args:
        scopes: Scopes the key must hold.
        cost: What a call spends from the key's rate limit and quota (1 to 10**12),
            charged once per request, the middleware's unit included; the
            middleware runs before routing, so when the rest is refused its
            unit stays spent.

    Raises:
        ConfigurationError: A malformed scope or cost (when the endpoint is declared).
    """
    needed = required_scopes(scopes)
    units = route_cost(cost)

    def decorate(endpoint: _Endpoint) -> _Endpoint:
        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            keys = APIKeys.of(request.app)
            try:
                await keys.authenticate(request.scope, needed, units)
            except APIKeysError as exc:
                return keys.response_for(exc, request.scope)
            if inspect.iscoroutinefunction(endpoint):
                result: Response = await endpoint(request)
            else:
                result = await run_in_threadpool(endpoint, request)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


async def _management_endpoint(request: Request) -> Response:
    keys = APIKeys.of(request.app)
    try:
        caller = await keys.authenticate(request.scope, keys.management_scopes)
    except APIKeysError as exc:
        return keys.response_for(exc, request.scope)
    return await keys.serve_management(request, caller, request.path_params.get("key_id"))


management_router = Router(
    routes=[
        Route(MANAGEMENT_PATH, _management_endpoint, methods=ROUTED_METHODS),
        Route(MANAGEMENT_PATH + "/{key_id}", _management_endpoint, methods=ROUTED_METHODS),
    ]
)
"""The ``/api-keys`` endpoints as a Starlette router: ``Mount("", app=management_router)``."""

__all__ = [
    "APIKeyMiddleware",
    "APIKeys",
    "IntegrationSettings",
    "management_router",
    "require_api_key",
    "to_response",
]
