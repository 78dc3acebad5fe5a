"""Authenticate one request: read its key, check the client, ask the manager, check scopes.

:func:`authenticate_sync` and :func:`authenticate_async` are twins that differ
only in how they call the manager; every step that does no IO is a helper here.

Optional, per client: keys over plain HTTP refused (403 ``https_required``,
``require_https``); repeated failures from one client address answered 429
with ``Retry-After`` (``client_max_failures``). The client address and scheme
come from the connection, or from ``X-Forwarded-For`` / ``X-Forwarded-Proto``
when the connection comes from a ``trusted_proxies`` address.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable

from apikeys._arguments import check_required_scopes
from apikeys._errors import (
    BackendUnavailableError,
    ConfigurationError,
    InsecureTransportError,
    InvalidInputError,
    InvalidKeyError,
    MissingKeyError,
    RateLimitedError,
)
from apikeys._events import EventReporter
from apikeys._keystate import check_scopes
from apikeys._models import VerifiedKey
from apikeys._protocols import AsyncKeyManager, KeyManager
from apikeys._ratelimit import FailureCounter, counts_as_failure
from apikeys.integrations._credentials import RequestCredentials
from apikeys.integrations._settings import IntegrationSettings, Limiters

API_KEY_ATTRIBUTE = "api_key"
"""Where every adapter publishes the verified key: ``request.state.api_key``
(Starlette), ``flask.g.api_key``, ``request.api_key`` (Django)."""


def required_scopes(scopes: Iterable[str] | str) -> tuple[str, ...]:
    """Validate the scopes a route requires, when the route is declared.

    Only an empty sequence requires no scope; a string is split on whitespace
    (``"read:data write:data"`` is two scopes).

    Raises:
        ConfigurationError: ``None``, a blank string, or a blank, malformed
            or wildcard scope.
    """
    try:
        return check_required_scopes(scopes)
    except InvalidInputError as exc:
        raise ConfigurationError(f"invalid required scopes: {exc.message}") from None


def is_async_manager(manager: KeyManager | AsyncKeyManager) -> bool:
    """Tell an async manager from a sync one by its ``validate_api_key``."""
    return inspect.iscoroutinefunction(getattr(manager, "validate_api_key", None))


@functools.lru_cache(maxsize=16)
def reporter(source: str) -> EventReporter:
    """The event reporter of an adapter (``source`` names the framework)."""
    return EventReporter(source)


def _refuse_plain_http(credentials: RequestCredentials, settings: IntegrationSettings) -> None:
    """Answer a request that came over plain HTTP while HTTPS is required.

    Raises:
        MissingKeyError: It sent no key: the usual 401 challenge.
        InsecureTransportError: It sent something in a key's place.
    """
    try:
        credentials.credential(settings)
    except MissingKeyError:
        raise
    except InvalidKeyError:
        pass
    raise InsecureTransportError()


def client_guard(
    credentials: RequestCredentials, settings: IntegrationSettings, limiter: FailureCounter | None
) -> tuple[FailureCounter, str] | None:
    """Refuse plain HTTP when HTTPS is required; return whom this request's failures count against.

    ``require_https`` and ``client_max_failures`` need the client's address and
    scheme; a request whose client is unknown counts as plain HTTP from an
    unknown address (refused when HTTPS is required, never limited).

    Returns:
        The limiter and the client's key in it, or ``None`` when the request
        is not limited.

    Raises:
        InsecureTransportError: ``require_https`` is on and the key came over HTTP.
    """
    if not (settings.require_https or settings.client_max_failures):
        return None
    client = credentials.client(settings)
    if settings.require_https and (client is None or not client.secure):
        _refuse_plain_http(credentials, settings)
    key = client.limiter_key if limiter is not None and client is not None else None
    return (limiter, key) if limiter is not None and key is not None else None


def accepted(verified: object, scopes: tuple[str, ...]) -> VerifiedKey:
    """The manager's answer, if it is a verified key holding ``scopes``.

    Checked here whatever the backend did with ``required_scopes``, so a
    third-party backend that ignores them still cannot let a request through.

    Raises:
        BackendUnavailableError: The answer is not a verified key (fail closed).
        InsufficientScopeError: A scope is missing.
    """
    if not isinstance(verified, VerifiedKey):
        raise BackendUnavailableError("API key backend returned an unexpected result")
    return check_scopes(verified, scopes)


def authenticate_sync(
    manager: KeyManager,
    credentials: RequestCredentials,
    settings: IntegrationSettings,
    scopes: tuple[str, ...] = (),
    *,
    limiters: Limiters,
    source: str = "integration",
) -> VerifiedKey:
    """Find the request's key, have the manager validate it, and return the result.

    ``scopes`` must come from :func:`required_scopes`; ``limiters`` are the
    app's (its ``APIKeys``'). Refusals the backend never sees -- no key, a
    value that cannot be a key, a client over its limit -- are reported as
    ``rejected`` events with ``source``; the backend reports its own.

    Raises:
        APIKeysError: No key, a refused key or client, a missing scope, or a
            backend failure.
    """
    guard = client_guard(credentials, settings, limiters.client)
    secret = None
    try:
        if guard is not None:
            guard[0].check(guard[1])
        secret = credentials.credential(settings)
        verified = manager.validate_api_key(secret, required_scopes=scopes)
    except (MissingKeyError, InvalidKeyError, RateLimitedError) as exc:
        if guard is not None and counts_as_failure(exc):
            guard[0].record_failure(guard[1])
        if secret is None:
            reporter(source).rejected(exc)
        raise
    return accepted(verified, scopes)


async def authenticate_async(
    manager: AsyncKeyManager,
    credentials: RequestCredentials,
    settings: IntegrationSettings,
    scopes: tuple[str, ...] = (),
    *,
    limiters: Limiters,
    source: str = "integration",
) -> VerifiedKey:
    """The async twin of :func:`authenticate_sync`."""
    guard = client_guard(credentials, settings, limiters.client)
    secret = None
    try:
        if guard is not None:
            await guard[0].check_async(guard[1])
        secret = credentials.credential(settings)
        verified = await manager.validate_api_key(secret, required_scopes=scopes)
    except (MissingKeyError, InvalidKeyError, RateLimitedError) as exc:
        if guard is not None and counts_as_failure(exc):
            await guard[0].record_failure_async(guard[1])
        if secret is None:
            reporter(source).rejected(exc)
        raise
    return accepted(verified, scopes)


__all__ = [
    "API_KEY_ATTRIBUTE",
    "accepted",
    "authenticate_async",
    "authenticate_sync",
    "client_guard",
    "is_async_manager",
    "required_scopes",
]
