"""API-key authentication for Flask: an extension, a view decorator and the ``/api-keys`` blueprint.

Example:
    >>> from flask import Flask, g
    >>> from apikeys.integrations.flask import APIKeys, management_router, require_api_key
    >>> app = Flask(__name__)
    >>> app.config["APIKEYS_BACKEND"] = "sqlite:///:memory:"
    >>> keys = APIKeys(app)
    >>> app.register_blueprint(management_router)
    >>> @app.get("/protected")
    ... @require_api_key(scopes=["read:data"])
    ... def protected():
    ...     return {"user": g.api_key.user_id}

Settings come from ``app.config``: ``APIKEYS_BACKEND`` (the backend URL),
the integration settings (``APIKEYS_HEADER_NAMES``, ``APIKEYS_EXEMPT_PATHS``…)
and any manager setting (``APIKEYS_KEY_PREFIX``, ``APIKEYS_CACHE_TTL``…).
The verified key is ``flask.g.api_key``. Flask managers are synchronous;
``async def`` views work too.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from apikeys._default import get_key_manager
from apikeys._errors import APIKeysError, ConfigurationError, MissingDependencyError
from apikeys._factory import create_key_manager
from apikeys._models import VerifiedKey
from apikeys._protocols import KeyManager
from apikeys.integrations._authentication import (
    API_KEY_ATTRIBUTE,
    DEMAND_ATTRIBUTE,
    NOT_ADMITTED,
    Admission,
    RouteDemand,
    admit_sync,
    declared_demand,
    is_async_manager,
    required_scopes,
    route_cost,
)
from apikeys.integrations._credentials import WSGICredentials
from apikeys.integrations._management import (
    MANAGEMENT_PATH,
    ROUTED_METHODS,
    ManagementRequest,
    handle_management_sync,
)
from apikeys.integrations._responses import CoreResponse, error_response
from apikeys.integrations._settings import (
    IntegrationSettings,
    Limiters,
    check_exempt_paths,
    is_exempt,
    split_config,
)

try:
    from flask import Blueprint, Flask, Response, after_this_request, request
    from flask.globals import app_ctx
except ImportError as exc:
    raise MissingDependencyError("flask", "flask") from exc

_View = TypeVar("_View", bound=Callable[..., Any])
_Proxied = TypeVar("_Proxied")
_EXTENSION = "apikeys"
# Where a request's Admission (its verified key, what it was charged) is kept:
# its own WSGI environ, never g.
_ADMISSION_ENVIRON_KEY = "apikeys.admission"


def to_response(core: CoreResponse) -> Response:
    """Turn a core response into a Flask one."""
    return Response(
        core.content(),
        status=core.status,
        headers=list(core.headers),
        mimetype=core.media_type if core.body is not None else None,
    )


@dataclass(frozen=True, slots=True)
class _AppState:
    """What :meth:`APIKeys.init_app` binds to one app: its settings, manager and limiters."""

    settings: IntegrationSettings
    manager: KeyManager | None
    limiters: Limiters

    def get_manager(self) -> KeyManager:
        return self.manager if self.manager is not None else get_key_manager()


class APIKeys:
    """The Flask extension: binds a sync key manager and settings to an app.

    Without a ``manager``, ``init_app`` builds one from ``APIKEYS_BACKEND``
    and the other ``APIKEYS_*`` keys of ``app.config``; with none of those, it
    uses :func:`apikeys.get_key_manager` (configured by the environment).

    Args:
        app: The app, or call :meth:`init_app` later (application factories).
        manager: A sync manager (``apikeys.create_key_manager(url)``).
        settings: Integration settings, instead of those in ``app.config``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        manager: KeyManager | None = None,
        settings: IntegrationSettings | None = None,
    ) -> None:
        if manager is not None and is_async_manager(manager):
            raise ConfigurationError("Flask needs a sync manager: apikeys.create_key_manager(...)")
        self._manager = manager
        self._settings = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read ``app.config``, attach to ``app`` and install the JSON error handler."""
        settings, backend, options = split_config(app.config, "APIKEYS_")
        manager = self._manager
        if manager is None and (backend is not None or options):
            manager = create_key_manager(backend, **options)
        settings = self._settings or settings
        app.extensions[_EXTENSION] = _AppState(settings, manager, Limiters.of(settings))
        app.register_error_handler(APIKeysError, _handle_error)
        # g may outlive the request (see _authenticate): g.api_key must not
        # carry one request's key into the next.
        app.teardown_request(_forget_published_key)


def _current(proxy: _Proxied) -> _Proxied:
    """The object behind a Flask context proxy (``app_ctx``, ``request``).

    Every attribute read through a proxy looks the context up again; this
    runs on every request, so the context is looked up once and its objects
    read directly (measured with ``python -m benchmarks.http_instructions``).
    """
    # getattr: the proxies are declared as the objects they stand for.
    resolved: _Proxied = getattr(proxy, "_get_current_object")()  # noqa: B009
    return resolved


def _state_of(app: Flask) -> _AppState:
    state = app.extensions.get(_EXTENSION)
    if not isinstance(state, _AppState):
        raise ConfigurationError("call apikeys.integrations.flask.APIKeys(app) first")
    return state


def _state() -> _AppState:
    return _state_of(_current(app_ctx).app)


def _handle_error(exc: APIKeysError) -> Response:
    return to_response(error_response(exc, _state().settings))


def _admission(environ: dict[str, Any]) -> Admission:
    admitted = environ.get(_ADMISSION_ENVIRON_KEY)
    return admitted if isinstance(admitted, Admission) else NOT_ADMITTED


def _authenticate(scopes: tuple[str, ...] = (), cost: int = 1) -> VerifiedKey:
    """Verify the current request's key, spend ``cost``, publish it on ``g.api_key`` and return it.

    A key already verified for this very request (by the middleware, then a
    decorated view) is reused, checked for ``scopes`` and charged only what
    ``cost`` adds to what it was charged. It is kept in the request's WSGI
    environ, which no other request shares: ``g`` belongs to the
    application context, which may outlive the request (an app context pushed
    at import, a test client inside ``with app.app_context()``), so whatever
    ``g`` holds is never read back, only overwritten.

    Raises:
        APIKeysError: The key is missing or refused; the extension's error
            handler turns it into the JSON answer.
    """
    environ = _current(request).environ
    context = _current(app_ctx)
    state = _state_of(context.app)

    def store(admitted: Admission) -> None:
        if admitted.fields and not _admission(environ).fields:
            # Only requests of a limited key pay for the hook, once.
            after_this_request(_add_rate_limit_fields)
        environ[_ADMISSION_ENVIRON_KEY] = admitted

    verified = admit_sync(
        state.get_manager(), WSGICredentials(environ), state.settings, scopes, cost,
        admitted=_admission(environ), store=store, limiters=state.limiters, source="flask",
    )  # fmt: skip
    # g keeps its attributes in its __dict__: written there, past g's own __setattr__.
    context.g.__dict__[API_KEY_ATTRIBUTE] = verified
    return verified


def _add_rate_limit_fields(response: Response) -> Response:
    """Add the ``RateLimit`` header fields of the request's key (an ``after_this_request``
    function): every answer of a protected route carries them, errors and 429s too."""
    fields = _admission(_current(request).environ).fields
    if fields and "RateLimit" not in response.headers:
        response.headers.extend(fields)
    return response


def _forget_published_key(_exc: BaseException | None) -> None:
    """Drop ``g.api_key`` when a request ends (a ``teardown_request`` function).

    A later request whose route requires no key must not see this request's
    key on a ``g`` that outlived it.
    """
    _current(app_ctx).g.__dict__.pop(API_KEY_ATTRIBUTE, None)


@overload
def require_api_key(scopes: _View) -> _View: ...
@overload
def require_api_key(
    scopes: Iterable[str] | str = (), *, cost: int = 1
) -> Callable[[_View], _View]: ...
def require_api_key(scopes: Any = (), *, cost: int = 1) -> Any:
    """Decorate a view (sync or ``async def``) to require a key holding ``scopes``.

    Use it as ``@require_api_key(scopes=["read:data"], cost=5)`` or bare
    ``@require_api_key``; the verified key is ``g.api_key``. ``cost`` is what a
    call spends from the key's rate limit and quota (1 to 10**12), charged once
    per request: behind :class:`APIKeyMiddleware`, the middleware checks the
    scopes and charges the cost itself, so a call refused for a missing scope
    or by the key's limits charges nothing.

    Raises:
        ConfigurationError: A malformed scope or cost (when the view is declared).
    """
    if callable(scopes):
        return require_api_key()(scopes)
    needed = required_scopes(scopes)
    units = route_cost(cost)
    demand = RouteDemand(needed, units)

    def decorate(view: _View) -> _View:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                _authenticate(needed, units)
                return await view(*args, **kwargs)

            setattr(async_wrapper, DEMAND_ATTRIBUTE, demand)  # for APIKeyMiddleware
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _authenticate(needed, units)
            return view(*args, **kwargs)

        setattr(wrapper, DEMAND_ATTRIBUTE, demand)  # for APIKeyMiddleware
        return wrapper  # type: ignore[return-value]

    return decorate


class APIKeyMiddleware:
    """Require a valid key on every request of ``app`` but exempt paths.

    A ``before_request`` hook: Flask's way to act on every request while ``g``
    exists, so the verified key lands on ``g.api_key``. Flask has routed the
    request by then: for a view decorated with ``require_api_key``, the key is
    validated here for the view's scopes too and charged the view's cost, in
    one validation, so that a request refused for a missing scope or by its
    key's limits charges nothing.

    Args:
        app: The app to protect.
        scopes: Scopes every request must hold.
        exempt_paths: Paths let through without a key (``/health``,
            ``/static/*``); by default ``APIKEYS_EXEMPT_PATHS``.
    """

    def __init__(
        self,
        app: Flask,
        *,
        scopes: Iterable[str] | str = (),
        exempt_paths: Sequence[str] | None = None,
    ) -> None:
        self.scopes = required_scopes(scopes)
        self.exempt_paths = check_exempt_paths(exempt_paths)
        app.before_request(self._check)

    def _check(self) -> None:
        exempt = self.exempt_paths
        if exempt is None:
            exempt = _state().settings.exempt_paths
        if not is_exempt(request.path, exempt):
            endpoint = request.endpoint
            view = None if endpoint is None else _current(app_ctx).app.view_functions.get(endpoint)
            demand = declared_demand(view)
            _authenticate(demand.with_scopes(self.scopes), demand.cost)


management_router = Blueprint("apikeys_management", __name__)
"""The ``/api-keys`` endpoints: ``app.register_blueprint(management_router)``."""


@management_router.route(MANAGEMENT_PATH, methods=ROUTED_METHODS)
@management_router.route(MANAGEMENT_PATH + "/<key_id>", methods=ROUTED_METHODS)
def _management_view(key_id: str | None = None) -> Response:
    state = _state()
    caller = _authenticate(state.settings.management_scopes)
    management = ManagementRequest(
        method=request.method,
        caller=caller,
        key_id=key_id,
        query=list(request.args.items(multi=True)),
        # At most one byte past the cap: enough for the core to refuse it.
        body=request.stream.read(state.settings.max_body_bytes + 1),
    )
    core = handle_management_sync(
        state.get_manager(), management, state.settings, limiters=state.limiters
    )
    return to_response(core)


__all__ = [
    "APIKeyMiddleware",
    "APIKeys",
    "IntegrationSettings",
    "management_router",
    "require_api_key",
    "to_response",
]
