"""Authenticate one request: read its key, check the client, ask the manager, check scopes.

:func:`authenticate_sync` and :func:`authenticate_async` are twins that differ
only in how they call the manager; every step that does no IO is a helper here.

Per client: keys over plain HTTP refused (403 ``https_required``,
``require_https``, off by default); repeated failures from one client address
answered 429 with ``Retry-After`` (``client_max_failures``, on by default for
Clerk managers only). The client address and scheme come from the connection,
or from ``X-Forwarded-For`` / ``X-Forwarded-Proto`` when the connection comes
from a ``trusted_proxies`` address.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

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
from apikeys._meter import check_cost
from apikeys._models import VerifiedKey
from apikeys._protocols import AsyncKeyManager, KeyManager
from apikeys._ratelimit import FailureCounter, counts_as_failure
from apikeys.integrations._credentials import RequestCredentials
from apikeys.integrations._ratelimit_fields import HeaderFields, refusal_fields, usage_fields
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


@dataclass(frozen=True, slots=True)
class RouteDemand:
    """What a decorated view demands of a request's key: the scopes it must hold
    (from :func:`required_scopes`) and what a call costs (from :func:`route_cost`)."""

    scopes: tuple[str, ...] = ()
    cost: int = 1

    def with_scopes(self, scopes: tuple[str, ...]) -> tuple[str, ...]:
        """``scopes`` (a middleware's), then this route's that they lack."""
        if not self.scopes:
            return scopes
        return scopes + tuple(scope for scope in self.scopes if scope not in scopes)


ANY_ROUTE = RouteDemand()
"""The demand of a view no decorator declared anything for."""

DEMAND_ATTRIBUTE = "apikeys_demand"
"""Where a view decorator records its :class:`RouteDemand`, so that a middleware
which knows the view before it runs (Django's, Flask's) validates the key for
the route's scopes and charges its cost itself, in one validation, rather than
one unit before the view asks for the rest: a request refused for a missing
scope or by the key's limits then charges nothing."""


def declared_demand(view: object) -> RouteDemand:
    """What ``view`` declares (its :data:`DEMAND_ATTRIBUTE`), else :data:`ANY_ROUTE`."""
    demand = getattr(view, DEMAND_ATTRIBUTE, None)
    return demand if isinstance(demand, RouteDemand) else ANY_ROUTE


def route_cost(cost: object) -> int:
    """Validate what a route costs, when the route is declared: a whole number from 1 to 10**12.

    Raises:
        ConfigurationError: Anything else (``0``, a float, ``True``).
    """
    try:
        return check_cost(cost)
    except InvalidInputError as exc:
        raise ConfigurationError(f"invalid route cost: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class Admission:
    """What authenticating one request has done so far, kept in that request's own storage.

    Attributes:
        verified: The key verified for the request, or ``None`` before (or without) one.
        charged: The units already charged to its limits for this request.
        fields: The ``RateLimit`` header fields its responses carry (none for an
            unlimited key).
    """

    verified: VerifiedKey | None = None
    charged: int = 0
    fields: HeaderFields = ()


NOT_ADMITTED = Admission()
"""A request nothing has authenticated yet."""


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

    ``require_https`` and a per-client ``limiter`` need the client's address and
    scheme; a request whose client is unknown counts as plain HTTP from an
    unknown address (refused when HTTPS is required, never limited).

    Returns:
        The limiter and the client's key in it, or ``None`` when the request
        is not limited.

    Raises:
        InsecureTransportError: ``require_https`` is on and the key came over HTTP.
    """
    if not settings.require_https and limiter is None:
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
    cost: int = 1,
    on_limited: Callable[[RateLimitedError], None] | None = None,
) -> VerifiedKey:
    """Find the request's key, have the manager validate it, and return the result.

    ``scopes`` must come from :func:`required_scopes`; ``limiters`` are the
    app's (its ``APIKeys``'); ``cost`` what the validation spends from the key's
    limits, and ``on_limited`` hears the refusal when those limits have no room
    for it (not when the client is over its own limit). Refusals the backend never sees -- no key, a
    value that cannot be a key, a client over its limit -- are reported as
    ``rejected`` events with ``source``; the backend reports its own.

    Raises:
        APIKeysError: No key, a refused key or client, a missing scope, or a
            backend failure.
    """
    guard = client_guard(credentials, settings, limiters.client_for(manager))
    secret = None
    try:
        if guard is not None:
            guard[0].check(guard[1])
        secret = credentials.credential(settings)
        if cost == 1:  # the default: managers written before costs existed still work
            verified = manager.validate_api_key(secret, required_scopes=scopes)
        else:
            verified = manager.validate_api_key(secret, required_scopes=scopes, cost=cost)
    except (MissingKeyError, InvalidKeyError, RateLimitedError) as exc:
        if guard is not None and counts_as_failure(exc):
            guard[0].record_failure(guard[1])
        if secret is not None and isinstance(exc, RateLimitedError) and on_limited is not None:
            on_limited(exc)
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
    cost: int = 1,
    on_limited: Callable[[RateLimitedError], None] | None = None,
) -> VerifiedKey:
    """The async twin of :func:`authenticate_sync`."""
    guard = client_guard(credentials, settings, limiters.client_for(manager))
    secret = None
    try:
        if guard is not None:
            await guard[0].check_async(guard[1])
        secret = credentials.credential(settings)
        if cost == 1:  # the default: managers written before costs existed still work
            verified = await manager.validate_api_key(secret, required_scopes=scopes)
        else:
            verified = await manager.validate_api_key(secret, required_scopes=scopes, cost=cost)
    except (MissingKeyError, InvalidKeyError, RateLimitedError) as exc:
        if guard is not None and counts_as_failure(exc):
            await guard[0].record_failure_async(guard[1])
        if secret is not None and isinstance(exc, RateLimitedError) and on_limited is not None:
            on_limited(exc)
        if secret is None:
            reporter(source).rejected(exc)
        raise
    return accepted(verified, scopes)


def still_to_charge(admitted: Admission, scopes: tuple[str, ...], cost: int) -> int:
    """What a route costing ``cost`` still has to charge, given what the request was admitted with.

    A key already verified for this request (by a middleware at cost 1, say) is
    checked for ``scopes`` and charged only the difference, so that the route's
    cost is charged once in all, never twice.

    Raises:
        InsufficientScopeError: The key verified for the request lacks a scope.
    """
    if admitted.verified is None:
        return cost
    check_scopes(admitted.verified, scopes)
    return max(0, cost - admitted.charged)


def admitted_as(admitted: Admission, verified: VerifiedKey, charged: int) -> Admission:
    """The request's admission once ``verified`` was charged ``charged`` more units."""
    fields = usage_fields(verified.usage) if verified.usage is not None else ()
    return Admission(verified, admitted.charged + charged, fields)


def refused_as(admitted: Admission, error: RateLimitedError) -> Admission:
    """The request's admission once the key's limits refused it: the 429's fields."""
    return replace(admitted, fields=refusal_fields(error))


def admit_sync(
    manager: KeyManager,
    credentials: RequestCredentials,
    settings: IntegrationSettings,
    scopes: tuple[str, ...],
    cost: int,
    *,
    admitted: Admission,
    store: Callable[[Admission], None],
    limiters: Limiters,
    source: str,
) -> VerifiedKey:
    """Authenticate a request for a route costing ``cost``, and ``store`` how it went.

    ``admitted`` is what the request's own storage holds; :func:`still_to_charge`
    says what is left to spend. Each adapter keeps the stored :class:`Admission`
    and attaches its ``fields`` to the request's response.

    Raises:
        APIKeysError: As :func:`authenticate_sync`.
    """
    extra = still_to_charge(admitted, scopes, cost)
    if extra == 0:
        assert admitted.verified is not None  # charged before, so verified before
        return admitted.verified
    verified = authenticate_sync(
        manager, credentials, settings, scopes, limiters=limiters, source=source, cost=extra,
        on_limited=lambda error: store(refused_as(admitted, error)),
    )  # fmt: skip
    store(admitted_as(admitted, verified, extra))
    return verified


async def admit_async(
    manager: AsyncKeyManager,
    credentials: RequestCredentials,
    settings: IntegrationSettings,
    scopes: tuple[str, ...],
    cost: int,
    *,
    admitted: Admission,
    store: Callable[[Admission], None],
    limiters: Limiters,
    source: str,
) -> VerifiedKey:
    """The async twin of :func:`admit_sync`."""
    extra = still_to_charge(admitted, scopes, cost)
    if extra == 0:
        assert admitted.verified is not None  # charged before, so verified before
        return admitted.verified
    verified = await authenticate_async(
        manager, credentials, settings, scopes, limiters=limiters, source=source, cost=extra,
        on_limited=lambda error: store(refused_as(admitted, error)),
    )  # fmt: skip
    store(admitted_as(admitted, verified, extra))
    return verified


__all__ = [
    "ANY_ROUTE",
    "API_KEY_ATTRIBUTE",
    "DEMAND_ATTRIBUTE",
    "NOT_ADMITTED",
    "Admission",
    "RouteDemand",
    "accepted",
    "admit_async",
    "admit_sync",
    "admitted_as",
    "authenticate_async",
    "authenticate_sync",
    "client_guard",
    "declared_demand",
    "is_async_manager",
    "refused_as",
    "required_scopes",
    "route_cost",
    "still_to_charge",
]
