"""How an integration reads credentials and answers: :class:`IntegrationSettings`, and what it builds."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from apikeys._config import check_redis_url
from apikeys._creationlimit import (
    DEFAULT_KEY_CREATION_WINDOW,
    DEFAULT_MAX_KEY_CREATIONS,
    CreationLimiter,
)
from apikeys._errors import ConfigurationError
from apikeys._factory import builtin_backend_of
from apikeys._ratelimit import FailureCounter, FailureLimiter
from apikeys._scopes import MANAGEMENT_SCOPE, normalize_scopes
from apikeys.integrations._clients import Network, ip_network

_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUERY_PARAM_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REALM_RE = re.compile(r"[ !#-\[\]-~]{1,64}")  # printable ASCII without '"' and '\'


def _environ_key(header_name: str) -> str:
    """The WSGI environ key of a header (PEP 3333: ``HTTP_`` but for the content headers)."""
    key = header_name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


@dataclass(frozen=True, slots=True)
class HeaderPlan:
    """The configured key headers, spelled as each kind of request names them.

    ``True`` marks ``Authorization``, whose value must be ``Bearer <key>``.
    """

    environ_keys: tuple[tuple[str, bool], ...]
    """WSGI environ keys (``HTTP_X_API_KEY``), which Django's ``META`` shares."""
    asgi_names: frozenset[bytes]
    """ASGI header names: lower-case bytes, as servers send them."""

    @classmethod
    def of(cls, header_names: Iterable[str]) -> HeaderPlan:
        lowered = dict.fromkeys(name.lower() for name in header_names)
        return cls(
            tuple((_environ_key(name), name == "authorization") for name in lowered),
            frozenset(name.encode("latin-1") for name in lowered),
        )


class IntegrationSettings(BaseModel):
    """How an integration reads credentials and answers; the same in every framework.

    Build it with keyword arguments, or from a framework's configuration with
    :meth:`from_mapping` (Flask ``app.config`` keys ``APIKEYS_<NAME>``,
    Django ``settings.APIKEYS["<NAME>"]``).

    Attributes:
        header_names: Headers a key is read from, in order. ``Authorization``
            takes ``Bearer <key>``; any other header takes the bare key.
        query_param: Name of the query-string parameter read when
            ``allow_query_param`` is set.
        allow_query_param: Accept keys in the query string. Off by default:
            URLs end up in logs, browser history and ``Referer`` headers.
        invalid_key_status: 403 (default) for a refused key, or 401 with
            ``error="invalid_token"`` for clients that follow RFC 6750.
        realm: The ``realm`` of ``WWW-Authenticate`` challenges.
        exempt_paths: Paths the whole-app middleware lets through without a
            key: exact paths, or prefixes written ``/public/*``.
        management_scope: The scope every ``/api-keys`` call must hold:
            :data:`apikeys.MANAGEMENT_SCOPE` (``keys:manage``) by default;
            ``keys:*`` covers it. ``None`` opens ``/api-keys`` to every valid
            key (each still reaches only its own owner's keys): an explicit
            choice, never a default.
        management_delete: What ``DELETE /api-keys/{id}`` does: ``revoke``
            (default; the key stays listed as revoked) or ``delete`` (gone).
        max_body_bytes: Largest ``/api-keys`` request body accepted.
        max_key_creations: Keys one owner may create through
            ``POST /api-keys`` in a burst (20 by default), after which one
            more every ``key_creation_window / max_key_creations`` seconds;
            past that, 429 with ``Retry-After``. ``0`` turns the limit off.
            Counted per process.
        key_creation_window: Seconds for an owner's creation allowance to
            grow back completely (600 by default).
        retry_after: ``Retry-After`` seconds sent with 429/503 when the error
            does not say.
        client_max_failures: Failed validations (malformed, unknown or wrong
            keys) one client address may make in a burst before it is
            answered 429 with ``Retry-After``; ``0`` turns the per-client
            limit off. Unset (``None``), it is
            :data:`CLERK_CLIENT_MAX_FAILURES` for a Clerk manager, whose every
            unknown key costs a call to Clerk, and off for the others.
            Counted per process, or for every worker with ``redis_url``.
            Requests in flight together are checked before any of them is
            counted: a client sending ``N`` at once may fail up to ``N``
            times past the limit, once.
        client_failure_window: Seconds for a client's allowance to grow back
            completely (see :class:`~apikeys._ratelimit.FailureLimiter`).
        trusted_proxies: Addresses or networks (``10.0.0.0/8``) of reverse
            proxies whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are
            believed. From any other peer those headers are ignored.
        require_https: Refuse keys that reached the app over plain HTTP with
            403 ``https_required`` (the key is never validated). Off by default.
        redis_url: Count ``client_max_failures`` and ``max_key_creations`` in
            this Redis, for every worker process at once. By default the
            ``APIKEYS_REDIS_URL`` environment variable; unset, each process
            counts alone. In Flask's and Django's configuration, ``REDIS_URL``
            serves the manager too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    header_names: tuple[str, ...] = ("Authorization", "X-API-Key")
    query_param: str = "api_key"
    allow_query_param: bool = False
    invalid_key_status: Literal[401, 403] = 403
    realm: str = "api"
    exempt_paths: tuple[str, ...] = ()
    management_scope: str | None = MANAGEMENT_SCOPE
    management_delete: Literal["revoke", "delete"] = "revoke"
    max_body_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    max_key_creations: int = Field(default=DEFAULT_MAX_KEY_CREATIONS, ge=0, le=1_000_000)
    key_creation_window: float = Field(default=DEFAULT_KEY_CREATION_WINDOW, gt=0, le=86400)
    retry_after: int = Field(default=5, ge=1, le=86400)
    client_max_failures: int | None = Field(default=None, ge=0, le=1_000_000)
    client_failure_window: float = Field(default=60.0, gt=0, le=86400)
    trusted_proxies: tuple[str, ...] = ()
    require_https: bool = False
    redis_url: SecretStr | None = None

    @property
    def management_scopes(self) -> tuple[str, ...]:
        """What every ``/api-keys`` call must hold: ``(management_scope,)``, or ``()`` when open."""
        scope = self.management_scope
        return (scope,) if scope is not None else ()

    @functools.cached_property
    def trusted_networks(self) -> tuple[Network, ...]:
        """``trusted_proxies`` as networks."""
        return tuple(ip_network(proxy) for proxy in self.trusted_proxies)

    @functools.cached_property
    def header_plan(self) -> HeaderPlan:
        """Where ``header_names`` are found in a WSGI environ and in ASGI headers."""
        return HeaderPlan.of(self.header_names)

    _check_redis_url = field_validator("redis_url")(check_redis_url)

    @field_validator("header_names", "exempt_paths", "trusted_proxies", mode="before")
    @classmethod
    def _split_text(cls, value: object) -> object:
        # "Authorization, X-API-Key" from an environment variable or a settings file.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("header_names")
    @classmethod
    def _check_header_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names:
            raise ValueError("at least one header name is needed")
        for name in names:
            if not _HEADER_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
        return names

    @field_validator("query_param")
    @classmethod
    def _check_query_param(cls, name: str) -> str:
        if not _QUERY_PARAM_RE.fullmatch(name):
            raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-'")
        return name

    @field_validator("realm")
    @classmethod
    def _check_realm(cls, realm: str) -> str:
        if not _REALM_RE.fullmatch(realm):
            raise ValueError("must be 1-64 printable ASCII characters without quotes or '\\'")
        return realm

    @field_validator("exempt_paths")
    @classmethod
    def _check_exempt_paths(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            if not path.startswith("/") or "*" in path.rstrip("*") or path.endswith("**"):
                raise ValueError(f"{path!r}: write an exact path '/health' or a prefix '/public/*'")
        return paths

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, proxies: tuple[str, ...]) -> tuple[str, ...]:
        for proxy in proxies:
            try:
                ip_network(proxy)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address or network") from None
        return proxies

    @field_validator("management_scope")
    @classmethod
    def _check_management_scope(cls, scope: str | None) -> str | None:
        if scope is not None:
            normalize_scopes([scope], allow_wildcards=False, field="management_scope")
        return scope

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> IntegrationSettings:
        """Build settings from a mapping whose keys are field names in any case.

        Raises:
            ConfigurationError: A name is unknown or a value is invalid.
        """
        normalized = {str(name).lower(): value for name, value in options.items()}
        try:
            return cls(**normalized)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
                for error in exc.errors(include_input=False, include_url=False)
            )
            raise ConfigurationError(f"invalid apikeys integration settings: {problems}") from None


DEFAULT_SETTINGS = IntegrationSettings()

CLERK_CLIENT_MAX_FAILURES = 10
"""``client_max_failures`` when it is unset and the manager is Clerk's: a tenth of the
100 calls per 10 seconds of a Clerk development instance, then one more every
``client_failure_window / 10`` seconds."""


@dataclass(frozen=True, slots=True)
class Limiters:
    """The counters an adapter's ``APIKeys`` keeps for its app, built from its settings once.

    Attributes:
        client: Failed validations per client address (``client_max_failures``),
            or ``None`` when that limit is off.
        creation: ``POST /api-keys`` creations per owner (``max_key_creations``),
            or ``None`` when that limit is off.
        client_for_clerk_only: ``client`` is the default limit
            (``client_max_failures`` unset), which counts for Clerk managers only.
    """

    client: FailureCounter | None = None
    creation: CreationLimiter | None = None
    client_for_clerk_only: bool = False

    def client_for(self, manager: object) -> FailureCounter | None:
        """The per-client limiter of requests that ``manager`` validates, or ``None`` when off."""
        if self.client_for_clerk_only and builtin_backend_of(manager) != "clerk":
            return None
        return self.client

    @classmethod
    def of(cls, settings: IntegrationSettings) -> Limiters:
        """Fresh limiters for ``settings``: each app counts its own requests.

        With a Redis URL (``settings.redis_url``, else ``APIKEYS_REDIS_URL``)
        they count in Redis, for every process of the deployment at once. With
        ``client_max_failures`` unset, the client limiter counts
        :data:`CLERK_CLIENT_MAX_FAILURES` and serves Clerk managers only (see
        :meth:`client_for`).
        """
        redis_url = (
            settings.redis_url.get_secret_value()
            if settings.redis_url is not None
            else os.environ.get("APIKEYS_REDIS_URL") or None
        )
        max_failures = settings.client_max_failures
        if max_failures is None:
            max_failures = CLERK_CLIENT_MAX_FAILURES
        client: FailureCounter | None = None
        if max_failures:
            client = FailureLimiter(max_failures, settings.client_failure_window)
            if redis_url is not None:
                from apikeys._redis import RedisFailureLimiter

                client = RedisFailureLimiter(redis_url, "client-failures", client)
        creation = (
            CreationLimiter(
                settings.max_key_creations, settings.key_creation_window, redis_url=redis_url
            )
            if settings.max_key_creations
            else None
        )
        return cls(client, creation, client_for_clerk_only=settings.client_max_failures is None)


def split_config(
    config: Mapping[str, Any], prefix: str = ""
) -> tuple[IntegrationSettings, str | None, dict[str, Any]]:
    """Split one configuration mapping into integration and manager settings.

    Keys are taken case-insensitively after ``prefix`` (``"APIKEYS_"`` for
    Flask's ``app.config``; none for Django's ``settings.APIKEYS``). ``BACKEND``
    is the backend URL; integration fields go to :class:`IntegrationSettings`;
    the rest are :class:`apikeys.Settings` options for the manager factory.

    Returns:
        ``(integration settings, backend URL or None, manager options)``.
    """
    integration: dict[str, Any] = {}
    manager_options: dict[str, Any] = {}
    backend: str | None = None
    prefix_upper = prefix.upper()
    for raw_name, value in config.items():
        name = str(raw_name)
        if not name.upper().startswith(prefix_upper):
            continue
        option = name[len(prefix) :].lower()
        if option == "backend":
            backend = value
        elif option == "redis_url":  # shared by the manager and the app's limiters
            integration[option] = manager_options[option] = value
        elif option in IntegrationSettings.model_fields:
            integration[option] = value
        elif option:
            manager_options[option] = value
    return IntegrationSettings.from_mapping(integration), backend, manager_options


def check_exempt_paths(paths: Iterable[str] | None) -> tuple[str, ...] | None:
    """Validate a middleware's own ``exempt_paths`` (``None`` means: use the settings').

    Raises:
        ConfigurationError: A pattern is neither ``/exact`` nor ``/prefix/*``.
    """
    if paths is None:
        return None
    return IntegrationSettings.from_mapping({"exempt_paths": tuple(paths)}).exempt_paths


def is_exempt(path: str, exempt_paths: Sequence[str]) -> bool:
    """Tell whether the whole-app middleware lets ``path`` through without a key.

    ``/health`` matches ``/health`` and ``/health/``; ``/public/*`` matches
    ``/public`` and everything under ``/public/``. A path with ``.`` or ``..``
    segments is never exempt, so ``/public/../admin`` cannot slip through.
    """
    if not path.startswith("/"):
        return False
    segments = path.split("/")
    if "." in segments or ".." in segments:
        return False
    trimmed = path.rstrip("/") or "/"
    for pattern in exempt_paths:
        if pattern.endswith("*"):
            base = pattern.rstrip("*").rstrip("/")
            if trimmed == (base or "/") or path.startswith(base + "/"):
                return True
        elif trimmed == (pattern.rstrip("/") or "/"):
            return True
    return False


__all__ = [
    "CLERK_CLIENT_MAX_FAILURES",
    "DEFAULT_SETTINGS",
    "HeaderPlan",
    "IntegrationSettings",
    "Limiters",
    "check_exempt_paths",
    "is_exempt",
    "split_config",
]
