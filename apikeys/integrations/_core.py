"""The framework-free policy every web integration shares.

An adapter (FastAPI/Starlette, Flask, Django) only reads its native request
into plain values, calls what is here, and turns a :class:`CoreResponse` into
a native response. Nothing here imports a web framework or does IO: manager
calls are *yielded* as :class:`ManagerCall` objects from generator flows, and
:func:`run_with_sync_manager` / :func:`run_with_async_manager` perform them
with a sync or an async manager, so each rule is written once.

Request-time policy:

- Credentials come from ``Authorization: Bearer <key>`` and ``X-API-Key``
  (configurable); a key in the query string is read only when enabled.
- No key → 401 with ``WWW-Authenticate: Bearer``; a refused key → 403 (or
  401 with ``error="invalid_token"`` for RFC 6750 clients); a missing scope →
  403 ``insufficient_scope``; backend down → 503 with ``Retry-After``.
- Error bodies are ``{"code": ..., "message": ...}`` plus ``missingScopes``,
  ``errors`` or ``retryAfter`` where they apply: never a secret, never a trace.
- ``POST /api-keys`` counts creations per owner (``max_key_creations`` per
  ``key_creation_window``); past the allowance, 429 with ``Retry-After``.
- Optional, per client: keys over plain HTTP refused (403 ``https_required``,
  ``require_https``); repeated failures from one client address answered 429
  with ``Retry-After`` (``client_max_failures``). The client address and
  scheme come from the connection, or from ``X-Forwarded-For`` /
  ``X-Forwarded-Proto`` when the connection comes from a ``trusted_proxies``
  address.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import ipaddress
import json
import logging
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, TypeVar, cast
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from apikeys._arguments import check_required_scopes
from apikeys._creationlimit import (
    DEFAULT_KEY_CREATION_WINDOW,
    DEFAULT_MAX_KEY_CREATIONS,
    CreationLimiter,
)
from apikeys._errors import (
    APIKeysError,
    BackendUnavailableError,
    ConfigurationError,
    FieldError,
    InsecureTransportError,
    InsufficientScopeError,
    InvalidInputError,
    InvalidKeyError,
    InvalidRequestError,
    MissingKeyError,
    RateLimitedError,
    RevocationIncompleteError,
)
from apikeys._events import EventReporter
from apikeys._flow import Flow, run_async, run_sync
from apikeys._keystate import check_scopes
from apikeys._models import VerifiedKey
from apikeys._protocols import AsyncKeyManager, KeyManager
from apikeys._ratelimit import FailureLimiter
from apikeys._scopes import MANAGEMENT_SCOPE, normalize_scopes

T = TypeVar("T")

logger = logging.getLogger("apikeys.integrations")

API_KEY_ATTRIBUTE = "api_key"
"""Where every adapter publishes the verified key: ``request.state.api_key``
(Starlette), ``flask.g.api_key``, ``request.api_key`` (Django)."""

# Longer than any key any backend issues, short enough to refuse garbage at once.
MAX_CREDENTIAL_LENGTH = 512
# A header value longer than this is refused without being parsed further.
MAX_HEADER_VALUE_LENGTH = 8192

_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUERY_PARAM_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REALM_RE = re.compile(r"[ !#-\[\]-~]{1,64}")  # printable ASCII without '"' and '\'
# Characters RFC 6750 allows inside a quoted error_description.
_DESCRIPTION_UNSAFE_RE = re.compile(r"[^ !#-\[\]-~]")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> _Address | None:
    """An IP address, with an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) read as IPv4."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _network(text: str) -> _Network:
    """A network of ``trusted_proxies``; an IPv4-mapped one (``::ffff:10.0.0.0/104``) as IPv4.

    Raises:
        ValueError: ``text`` is not an address or network.
    """
    network = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _environ_key(header_name: str) -> str:
    """The WSGI environ key of a header (PEP 3333: ``HTTP_`` but for the content headers)."""
    key = header_name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


class _HeaderPlan(NamedTuple):
    """The configured key headers, spelled as each kind of request names them.

    ``True`` marks ``Authorization``, whose value must be ``Bearer <key>``.
    """

    environ_keys: tuple[tuple[str, bool], ...]
    """WSGI environ keys (``HTTP_X_API_KEY``), which Django's ``META`` shares."""
    asgi_names: Mapping[bytes, bool]
    """ASGI header names: lower-case bytes, as servers send them."""
    text_names: Mapping[str, bool]
    """Lower-cased names as text, for headers already read into pairs or mappings."""

    @classmethod
    def of(cls, header_names: Iterable[str]) -> _HeaderPlan:
        lowered = {name.lower(): name.lower() == "authorization" for name in header_names}
        return cls(
            tuple((_environ_key(name), bearer) for name, bearer in lowered.items()),
            MappingProxyType({name.encode("latin-1"): bearer for name, bearer in lowered.items()}),
            MappingProxyType(lowered),
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
            answered 429 with ``Retry-After``; ``0`` (default) turns the
            per-client limit off. Counted per process.
        client_failure_window: Seconds for a client's allowance to grow back
            completely (see :class:`~apikeys._ratelimit.FailureLimiter`).
        trusted_proxies: Addresses or networks (``10.0.0.0/8``) of reverse
            proxies whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are
            believed. From any other peer those headers are ignored.
        require_https: Refuse keys that reached the app over plain HTTP with
            403 ``https_required`` (the key is never validated). Off by default.
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
    client_max_failures: int = Field(default=0, ge=0, le=1_000_000)
    client_failure_window: float = Field(default=60.0, gt=0, le=86400)
    trusted_proxies: tuple[str, ...] = ()
    require_https: bool = False

    # Built from the fields once; shared by every request these settings serve.
    _client_limiter: FailureLimiter | None = PrivateAttr(default=None)
    _creation_limiter: CreationLimiter | None = PrivateAttr(default=None)
    _trusted_networks: tuple[_Network, ...] = PrivateAttr(default=())
    _header_plan: _HeaderPlan = PrivateAttr(default=None)  # type: ignore[assignment]

    def model_post_init(self, context: Any, /) -> None:
        """Build the limiters, the trusted networks and the header plan once."""
        if self.client_max_failures:
            self._client_limiter = FailureLimiter(
                self.client_max_failures, self.client_failure_window
            )
        if self.max_key_creations:
            self._creation_limiter = CreationLimiter(
                self.max_key_creations, self.key_creation_window
            )
        self._trusted_networks = tuple(_network(proxy) for proxy in self.trusted_proxies)
        self._header_plan = _HeaderPlan.of(self.header_names)

    def __eq__(self, other: object) -> bool:
        # Settings are values: two with the same fields are equal, whatever their limiters hold.
        if not isinstance(other, IntegrationSettings):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *self.__dict__.values()))

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> IntegrationSettings:
        # Frozen: a copy is the same value, and it must share the limiter's state
        # (a lock cannot be copied anyway).
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its fields; the copy starts with a fresh limiter.
        return (type(self).model_validate, (self.model_dump(),))

    @property
    def client_limiter(self) -> FailureLimiter | None:
        """The per-client failure limiter, or ``None`` when it is off."""
        # Read per request: the private dict directly, not pydantic's slower __getattr__.
        private = self.__pydantic_private__
        return private["_client_limiter"] if private else None

    @property
    def creation_limiter(self) -> CreationLimiter | None:
        """The per-owner limit on ``POST /api-keys``, or ``None`` when it is off."""
        private = self.__pydantic_private__
        return private["_creation_limiter"] if private else None

    @property
    def management_scopes(self) -> tuple[str, ...]:
        """What every ``/api-keys`` call must hold: ``(management_scope,)``, or ``()`` when open."""
        scope = self.management_scope
        return (scope,) if scope is not None else ()

    @property
    def trusted_networks(self) -> tuple[_Network, ...]:
        """``trusted_proxies`` as networks."""
        private = self.__pydantic_private__
        return private["_trusted_networks"] if private else ()

    @property
    def header_plan(self) -> _HeaderPlan:
        """Where ``header_names`` are found in a WSGI environ and in ASGI headers."""
        private = self.__pydantic_private__
        plan: _HeaderPlan | None = private["_header_plan"] if private else None
        return plan if plan is not None else _HeaderPlan.of(self.header_names)

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
                _network(proxy)
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


_DEFAULT_SETTINGS = IntegrationSettings()


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
        elif option in IntegrationSettings.model_fields:
            integration[option] = value
        elif option:
            manager_options[option] = value
    return IntegrationSettings.from_mapping(integration), backend, manager_options


def _text(value: str | bytes) -> str:
    # Headers arrive as bytes in ASGI; latin-1 maps every byte, so decoding never fails.
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _pairs(
    source: Mapping[str, Any] | Iterable[tuple[str | bytes, str | bytes]],
) -> Iterator[tuple[str, str]]:
    """Yield ``(name, value)`` text pairs from a mapping or a list of pairs."""
    items: Iterable[tuple[str | bytes, Any]] = (
        cast("Mapping[str, Any]", source).items() if isinstance(source, Mapping) else source
    )
    for name, value in items:
        values: Iterable[Any] = value if isinstance(value, list | tuple) else (value,)
        for item in values:
            yield _text(name), _text(item)


HeaderSource = Mapping[str, Any] | Iterable[tuple[str | bytes, str | bytes]]
"""Headers or query parameters: a mapping, or ``(name, value)`` pairs (repeats kept)."""


_REPEATED_MESSAGE = "An API key header was sent more than once, or holds a list; send one key"

# How nearly every client spells the scheme; other spellings take the general path.
_BEARER_PREFIXES = frozenset({"Bearer ", "bearer ", "BEARER "})


def _credential_from(value: str, bearer: bool) -> str | None:
    """Return the key inside one header or query value, or ``None`` if there is none.

    Raises:
        InvalidKeyError: The value holds something that cannot be a key.
    """
    # The shape nearly every request sends, "Bearer <visible ASCII>" or the bare
    # key, settled with a few C string methods (a regex scan costs several
    # times more); anything else takes the general path below, which gives the
    # same answer for these values.
    plain = (value[7:] if value[:7] in _BEARER_PREFIXES else "") if bearer else value
    if (
        0 < len(plain) <= MAX_CREDENTIAL_LENGTH
        and plain.isascii()
        and plain.isprintable()
        and " " not in plain
        and "," not in plain
    ):
        return plain
    if len(value) > MAX_HEADER_VALUE_LENGTH:
        raise InvalidKeyError()
    value = value.strip(" \t\r\n")
    if value[:6].lower() == "bearer" and value[6:7] in (" ", "\t"):
        value = value[7:].lstrip(" \t")
    elif bearer:
        # Another scheme (Basic, Digest...), or "Bearer" alone: as if no key was sent.
        return None
    if not value:
        return None
    if "," in value:
        # No key holds a comma (RFC 6750's b64token has none): this is a header sent
        # more than once, its values joined (by the WSGI server, or by _combined).
        raise InvalidKeyError(_REPEATED_MESSAGE)
    # Visible ASCII only: every key format we know fits, and nothing else reaches a backend.
    if (
        len(value) > MAX_CREDENTIAL_LENGTH
        or not value.isascii()
        or not value.isprintable()
        or " " in value
    ):
        raise InvalidKeyError()
    return value


def _items(source: HeaderSource) -> Iterable[tuple[Any, Any]]:
    return source.items() if isinstance(source, Mapping) else source


def _settle(
    found: list[str],
    query: Callable[[], Iterable[tuple[str, str]]],
    settings: IntegrationSettings,
) -> str:
    """Decide which key a request presents, from its header keys and (lazily) its query.

    The query string is read only when keys may come from it, or to explain a
    refusal when the headers held none.
    """
    query_used = False
    if settings.allow_query_param or not found:
        wanted = settings.query_param
        for name, value in query():
            if name == wanted:
                query_used = True
                if settings.allow_query_param:
                    credential = _credential_from(value, False)
                    if credential is not None:
                        found.append(credential)
    if len(found) > 1 and len(set(found)) > 1:
        raise InvalidKeyError("Several different API keys were sent; send exactly one")
    if found:
        return found[0]
    if query_used and not settings.allow_query_param:
        raise MissingKeyError(
            "API keys are not accepted in the query string;"
            " send an 'Authorization: Bearer <key>' header"
        )
    raise MissingKeyError()


def _combined(
    fields: list[tuple[str | bytes, str | bytes, bool]],
) -> list[tuple[str | bytes, bool]]:
    """One value per key header: the values of a repeated header joined with ``", "``.

    A recipient may combine repeated fields so (RFC 9110, section 5.3) and WSGI
    servers always do before the app sees them, so every adapter gets the same
    answer: a key header sent more than once holds a list, which is no key
    (:func:`_credential_from`). ``fields`` are ``(name, value, is Authorization)``
    with names as the request spells them after lower-casing.
    """
    if len(fields) == 1:  # the usual request
        return [fields[0][1:]]
    merged: dict[str | bytes, tuple[str | bytes, bool]] = {}
    for name, value, bearer in fields:
        earlier = merged.get(name)
        merged[name] = (
            (value, bearer) if earlier is None else (f"{_text(earlier[0])}, {_text(value)}", bearer)
        )
    return list(merged.values())


def _credentials_in(values: Iterable[tuple[str | bytes, bool]]) -> list[str]:
    """The keys inside header values, each marked ``True`` if it is an ``Authorization``.

    Raises:
        InvalidKeyError: A value cannot be a key; a repeated header is named
            first, whatever the order of the headers.
    """
    found = []
    refusal: InvalidKeyError | None = None
    for value, bearer in values:
        try:
            credential = _credential_from(_text(value), bearer)
        except InvalidKeyError as exc:
            if refusal is None or exc.message == _REPEATED_MESSAGE:
                refusal = exc
            continue
        if credential is not None:
            found.append(credential)
    if refusal is not None:
        raise refusal
    return found


def _settle_values(
    values: list[tuple[str | bytes, bool]],
    query: Callable[[], Iterable[tuple[str, str]]],
    settings: IntegrationSettings,
) -> str:
    """:func:`_settle` the keys inside header values (see :func:`_credentials_in`)."""
    if len(values) == 1 and not settings.allow_query_param:
        # The usual request: one key header, the query string not consulted.
        value, bearer = values[0]
        credential = _credential_from(value if type(value) is str else _text(value), bearer)
        if credential is not None:
            return credential
    return _settle(_credentials_in(values), query, settings)


def extract_credential(
    headers: HeaderSource, query: HeaderSource = (), settings: IntegrationSettings | None = None
) -> str:
    """Return the one API key a request presents.

    Header names match case-insensitively; surrounding whitespace and the
    case of ``Bearer`` do not matter; the same key in two different key
    headers (``Authorization`` and ``X-API-Key``) is fine. The values of one
    key header sent more than once are combined as a WSGI server combines them
    (:func:`_combined`), into a list, which is never a key: refused (403), or
    no key at all when an ``Authorization`` list does not start with ``Bearer``.

    Raises:
        MissingKeyError: No key was sent (401).
        InvalidKeyError: A value cannot be a key (too long, not visible ASCII,
            a list), a key header came more than once, or several different
            keys were sent (403).
    """
    settings = settings or _DEFAULT_SETTINGS
    plan = settings.header_plan
    fields: list[tuple[str | bytes, str | bytes, bool]] = []
    for name, value in _items(headers):
        # ASGI header names are bytes, lower case by the spec.
        lowered = name if isinstance(name, bytes) else name.lower()
        bearer = (
            plan.asgi_names.get(lowered)
            if isinstance(lowered, bytes)
            else plan.text_names.get(lowered)
        )
        if bearer is not None:
            key = _text(lowered)
            fields += (
                (key, item, bearer)
                for item in (value if isinstance(value, list | tuple) else (value,))
            )
    return _settle_values(_combined(fields), lambda: _pairs(query), settings)


def _query_pairs(query_string: str) -> Iterator[tuple[str, str]]:
    """``(name, value)`` pairs of a raw query string, decoded as ``parse_qsl`` does."""
    if not query_string:
        return
    for part in query_string.split("&"):
        if part:
            name, _, value = part.partition("=")
            yield unquote_plus(name), unquote_plus(value)


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
    if not exempt_paths or not path.startswith("/"):
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
class Peer:
    """The other end of a request, as the server saw it (or a trusted proxy reported it).

    Attributes:
        address: The client's IP address as text (``REMOTE_ADDR``, the ASGI
            ``client``), or ``None`` when the server does not know it.
        scheme: ``http``, ``https``, ``ws`` or ``wss``.
    """

    address: str | None
    scheme: str = "http"

    @property
    def secure(self) -> bool:
        """Whether the request came over TLS."""
        return self.scheme.lower() in ("https", "wss")

    @property
    def limiter_key(self) -> str | None:
        """Who the per-client limiter counts this client as, or ``None`` if unknown.

        An IPv6 client counts as its ``/64`` network: one subscriber usually
        holds at least a ``/64`` and could otherwise take a fresh address for
        every attempt. An IPv4-mapped address (``::ffff:192.0.2.1``, what a
        dual-stack socket reports for IPv4 clients) counts as the IPv4
        address. Anything that is not an IP address counts as itself.

        Example:
            >>> Peer("2001:db8:1:2:aaaa::1").limiter_key
            '2001:db8:1:2::/64'
            >>> Peer("::ffff:192.0.2.1").limiter_key
            '192.0.2.1'
        """
        address = self.address
        if address is None:
            return None
        parsed = _ip(address)
        if parsed is None:
            return address
        if isinstance(parsed, ipaddress.IPv6Address):
            return f"{ipaddress.IPv6Address(int(parsed) >> 64 << 64)}/64"
        return str(parsed)

    @classmethod
    def of_asgi(cls, scope: Mapping[str, Any]) -> Peer:
        """The peer of an ASGI connection: its ``client`` and ``scheme``."""
        client = scope.get("client")
        return cls(str(client[0]) if client else None, str(scope.get("scheme", "http")))


def _is_trusted(address: _Address | None, networks: Sequence[_Network]) -> bool:
    return address is not None and any(address in network for network in networks)


# Hops read from X-Forwarded-For: far more than any real proxy chain.
_MAX_FORWARDED_HOPS = 32

# Set-up problems already logged: each is a fact about the deployment, so once per process.
_proxy_warnings_given: set[str] = set()
_PROXY_DOCS = "see 'Behind a reverse proxy' in the apikeys security docs"


# What an untrusted peer's X-Forwarded-For can reveal; once both are logged it is not read.
_UNTRUSTED_PROBLEMS = frozenset({"resolved_by_server", "untrusted"})


def _warn_once(problem: str, message: str, *args: object) -> None:
    if problem not in _proxy_warnings_given:
        _proxy_warnings_given.add(problem)
        logger.warning(message + "; " + _PROXY_DOCS, *args)


def resolve_client(headers: HeaderSource, peer: Peer, settings: IntegrationSettings) -> Peer:
    """The client behind the trusted proxies, if the connection comes from one.

    ``X-Forwarded-For`` is read from the right: each hop added by a trusted
    proxy is skipped, and the first address that is not a trusted proxy is
    the client (a client cannot forge the hops that proxies append). A hop
    that is not an IP address stops the walk at the proxy that reported it.
    ``X-Forwarded-Proto`` counts as HTTPS only if every value it lists is
    ``https``. Both headers are ignored unless the peer is a trusted proxy.
    IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) are read as IPv4.

    What the server did to these headers before the app saw them cannot be
    undone here, so a set-up that defeats ``trusted_proxies``,
    ``client_max_failures`` or ``require_https`` is logged once per process
    as a WARNING on ``apikeys.integrations``: a trusted proxy's request
    without ``X-Forwarded-For`` (the server removed it: waitress's default) or
    without ``X-Forwarded-Proto`` while HTTPS is required; a client address
    the server already took from ``X-Forwarded-For`` (uvicorn's default for
    connections from 127.0.0.1); ``X-Forwarded-For`` from a peer that is not
    a trusted proxy (an unlisted proxy makes all its clients one client).
    """
    networks = settings.trusted_networks
    peer_ip = _ip(peer.address) if peer.address is not None else None
    trusted = _is_trusted(peer_ip, networks)
    if not trusted and (peer_ip is None or _proxy_warnings_given >= _UNTRUSTED_PROBLEMS):
        return peer
    hops: list[str] = []
    protocols: list[str] = []
    for name, value in _pairs(headers):
        lowered = name.lower()
        if lowered == "x-forwarded-for":
            hops += value.split(",")
        elif lowered == "x-forwarded-proto":
            protocols += [part.strip().lower() for part in value.split(",")]
    if not trusted:
        if hops:
            _diagnose_untrusted_forwarding(peer_ip, hops, settings)
        return peer
    if not hops and settings.client_max_failures:
        _warn_once(
            "no_forwarded_for",
            "apikeys: a request from trusted proxy %s carried no X-Forwarded-For, so the "
            "per-client limit counts every client behind that proxy as one (waitress removes "
            "the header unless started with --no-clear-untrusted-proxy-headers)",
            peer_ip,
        )
    address = peer.address
    for hop in reversed(hops[-_MAX_FORWARDED_HOPS:]):
        parsed = _ip(hop)
        if parsed is None:
            break
        address = str(parsed)
        if not any(parsed in network for network in networks):
            break
    scheme = peer.scheme
    if protocols:
        scheme = "https" if all(protocol == "https" for protocol in protocols) else "http"
    elif settings.require_https and not peer.secure:
        _warn_once(
            "no_forwarded_proto",
            "apikeys: a request from trusted proxy %s carried no X-Forwarded-Proto, so "
            "require_https refuses every key it forwards (waitress removes the header unless "
            "started with --no-clear-untrusted-proxy-headers)",
            peer_ip,
        )
    return Peer(address, scheme)


def _diagnose_untrusted_forwarding(
    peer_ip: _Address | None, hops: list[str], settings: IntegrationSettings
) -> None:
    """Log why a peer that is not a trusted proxy sent ``X-Forwarded-For``, once per process."""
    if any(_ip(hop) == peer_ip for hop in hops[-_MAX_FORWARDED_HOPS:]):
        # The peer is one of the forwarded hops: the server replaced the
        # proxy's address with the header's before the app was called.
        _warn_once(
            "resolved_by_server",
            "apikeys: the server already took the client address %s from X-Forwarded-For "
            "(uvicorn does for connections from --forwarded-allow-ips, 127.0.0.1 and ::1 by "
            "default; waitress with --trusted-proxy), so per-client limits and require_https "
            "depend on the server's proxy settings, not on trusted_proxies=%r",
            peer_ip,
            settings.trusted_proxies,
        )
    else:
        _warn_once(
            "untrusted",
            "apikeys: X-Forwarded-For from %s is ignored, as it is not in trusted_proxies=%r; "
            "if it is your reverse proxy, list it, or the per-client limit counts every client "
            "behind it as one",
            peer_ip,
            settings.trusted_proxies,
        )


@functools.lru_cache(maxsize=16)
def _reporter(source: str) -> EventReporter:
    return EventReporter(source)


class RequestCredentials(ABC):
    """What one request presents, read from the native request only when asked.

    Adapters wrap their request in one of the subclasses: :class:`WSGICredentials`
    (Flask, Django), :class:`ASGICredentials` (Starlette, FastAPI) or
    :class:`PairCredentials` (headers and query already as pairs).
    """

    __slots__ = ()

    @abstractmethod
    def credential(self, settings: IntegrationSettings) -> str:
        """The one API key the request presents (see :func:`extract_credential`).

        Raises:
            MissingKeyError: No key was sent (401).
            InvalidKeyError: A value cannot be a key, or several different keys were sent.
        """

    @abstractmethod
    def client(self, settings: IntegrationSettings) -> Peer | None:
        """The client behind any trusted proxies (see :func:`resolve_client`), if known."""


class PairCredentials(RequestCredentials):
    """Headers and query parameters as mappings or ``(name, value)`` pairs, and the peer."""

    __slots__ = ("headers", "peer", "query")

    def __init__(self, headers: HeaderSource, query: HeaderSource = (), peer: Peer | None = None):
        self.headers = headers
        self.query = query
        self.peer = peer

    def credential(self, settings: IntegrationSettings) -> str:
        return extract_credential(self.headers, self.query, settings)

    def client(self, settings: IntegrationSettings) -> Peer | None:
        peer = self.peer
        return resolve_client(self.headers, peer, settings) if peer is not None else None


_FORWARDED_ENVIRON_KEYS = (
    ("x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
    ("x-forwarded-proto", "HTTP_X_FORWARDED_PROTO"),
)


class WSGICredentials(RequestCredentials):
    """A WSGI environ: Flask's ``request.environ``, Django's ``request.META``.

    Only the configured headers are looked up (``HTTP_AUTHORIZATION``...), and
    the query string is parsed only when it matters.

    Args:
        environ: The environ (or ``META``).
        scheme: Reads the request's scheme, when the framework knows better
            than ``wsgi.url_scheme`` (Django's ``SECURE_PROXY_SSL_HEADER``).
    """

    __slots__ = ("environ", "scheme")

    def __init__(
        self, environ: Mapping[str, Any], scheme: Callable[[], str | None] | None = None
    ) -> None:
        self.environ = environ
        self.scheme = scheme

    def credential(self, settings: IntegrationSettings) -> str:
        environ = self.environ
        values: list[tuple[str | bytes, bool]] = []
        # A loop, not a comprehension: before Python 3.12 a comprehension is a function call.
        for key, bearer in settings.header_plan.environ_keys:
            if key in environ:
                values.append((environ[key], bearer))
        return _settle_values(values, self._query, settings)

    def _query(self) -> Iterator[tuple[str, str]]:
        return _query_pairs(_text(self.environ.get("QUERY_STRING") or ""))

    def client(self, settings: IntegrationSettings) -> Peer | None:
        environ = self.environ
        scheme = self.scheme() if self.scheme is not None else environ.get("wsgi.url_scheme")
        peer = Peer(environ.get("REMOTE_ADDR") or None, scheme or "http")
        forwarded = [
            (name, environ[key]) for name, key in _FORWARDED_ENVIRON_KEYS if key in environ
        ]
        return resolve_client(forwarded, peer, settings)


class ASGICredentials(RequestCredentials):
    """An ASGI connection scope (HTTP or WebSocket)."""

    __slots__ = ("scope",)

    def __init__(self, scope: Mapping[str, Any]) -> None:
        self.scope = scope

    def credential(self, settings: IntegrationSettings) -> str:
        wanted = settings.header_plan.asgi_names
        fields: list[tuple[str | bytes, str | bytes, bool]] = []
        for name, value in self.scope["headers"]:  # a loop: see WSGICredentials.credential
            if name in wanted:
                fields.append((name, value, wanted[name]))
        return _settle_values(_combined(fields), self._query, settings)

    def _query(self) -> Iterator[tuple[str, str]]:
        return _query_pairs(_text(self.scope.get("query_string") or b""))

    def client(self, settings: IntegrationSettings) -> Peer | None:
        return resolve_client(self.scope["headers"], Peer.of_asgi(self.scope), settings)


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


def _read_credential(
    credentials: RequestCredentials, settings: IntegrationSettings, source: str
) -> str:
    """The request's key; a refusal here is reported, as the backend never sees it."""
    try:
        return credentials.credential(settings)
    except (MissingKeyError, InvalidKeyError) as exc:
        _reporter(source).rejected(exc)
        raise


def _accepted(verified: object, scopes: tuple[str, ...]) -> VerifiedKey:
    if not isinstance(verified, VerifiedKey):
        # Fail closed on a backend that returns anything but a verified key.
        raise BackendUnavailableError("API key backend returned an unexpected result")
    # Checked again here, so a third-party backend that ignores required_scopes
    # still cannot let a request through.
    return check_scopes(verified, scopes)


# A request without a per-client limit; nullcontext is reusable and reentrant.
_UNGUARDED = contextlib.nullcontext()

_NO_KEYWORDS: Mapping[str, Any] = MappingProxyType({})


class ManagerCall(NamedTuple):
    """One manager method call a flow asks its driver to perform.

    A named tuple: one is built on every protected request, and tuples are the
    cheapest immutable records. ``repr`` names only the method: the arguments
    may hold a secret.
    """

    method: Literal[
        "validate_api_key", "list_api_keys", "get_api_key", "create_api_key",
        "revoke_api_key", "delete_api_key",
    ]  # fmt: skip
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = _NO_KEYWORDS

    def __repr__(self) -> str:
        return f"ManagerCall({self.method!r})"


def run_with_sync_manager(flow: Flow[ManagerCall, T], manager: KeyManager) -> T:
    """Run ``flow``, performing its calls on a synchronous manager."""

    def perform(call: ManagerCall) -> Any:
        return getattr(manager, call.method)(*call.args, **call.kwargs)

    return run_sync(flow, perform)


async def run_with_async_manager(flow: Flow[ManagerCall, T], manager: AsyncKeyManager) -> T:
    """Run ``flow``, awaiting its calls on an async manager."""

    def perform(call: ManagerCall) -> Awaitable[Any]:
        method: Callable[..., Awaitable[Any]] = getattr(manager, call.method)
        return method(*call.args, **call.kwargs)

    return await run_async(flow, perform)


def is_async_manager(manager: KeyManager | AsyncKeyManager) -> bool:
    """Tell an async manager from a sync one by its ``validate_api_key``."""
    return inspect.iscoroutinefunction(getattr(manager, "validate_api_key", None))


def credentials_flow(
    credentials: RequestCredentials,
    settings: IntegrationSettings,
    scopes: tuple[str, ...] = (),
    *,
    source: str = "integration",
) -> Flow[ManagerCall, VerifiedKey]:
    """Find the request's key, have the manager validate it, and return the result.

    ``scopes`` must come from :func:`required_scopes`. The scopes are checked
    again here, so a third-party backend that ignores ``required_scopes``
    still cannot let a request through.

    ``require_https`` and ``client_max_failures`` need the client's address
    and scheme (:meth:`RequestCredentials.client`); a request whose client is
    unknown counts as plain HTTP from an unknown address (refused when HTTPS
    is required, never limited). Refusals the backend never sees -- no key, a
    value that cannot be a key, a client over its limit -- are reported as
    ``rejected`` events with ``source``; the backend reports its own.

    Raises:
        InsecureTransportError: ``require_https`` is on and the key came over HTTP.
        RateLimitedError: The client is over ``client_max_failures`` (429).
    """
    guard: contextlib.AbstractContextManager[None] = _UNGUARDED
    if settings.require_https or settings.client_max_failures:
        client = credentials.client(settings)
        if settings.require_https and (client is None or not client.secure):
            _refuse_plain_http(credentials, settings)
        limiter = settings.client_limiter
        key = client.limiter_key if limiter is not None and client is not None else None
        if limiter is not None and key is not None:
            guard = limiter.attempt(key)
    asked_backend = False
    try:
        with guard:
            secret = credentials.credential(settings)
            asked_backend = True
            verified = yield ManagerCall("validate_api_key", (secret,), {"required_scopes": scopes})
    except (MissingKeyError, RateLimitedError, InvalidKeyError) as exc:
        # The backend reports its own refusals; only those made here, before
        # any backend call, would otherwise go unseen.
        if not asked_backend:
            _reporter(source).rejected(exc)
        raise
    return _accepted(verified, scopes)


def authentication_flow(
    headers: HeaderSource,
    query: HeaderSource,
    settings: IntegrationSettings,
    scopes: tuple[str, ...] = (),
    *,
    peer: Peer | None = None,
    source: str = "integration",
) -> Flow[ManagerCall, VerifiedKey]:
    """:func:`credentials_flow` for headers and query parameters given as pairs or mappings.

    ``peer`` is the connection's address and scheme, as the server saw it.
    """
    return credentials_flow(PairCredentials(headers, query, peer), settings, scopes, source=source)


def authenticate_sync(
    manager: KeyManager,
    credentials: RequestCredentials,
    settings: IntegrationSettings,
    scopes: tuple[str, ...] = (),
    *,
    source: str = "integration",
) -> VerifiedKey:
    """Run :func:`credentials_flow` with a sync manager; the per-request path of every adapter.

    With the per-client options off (the default) the same steps run inline,
    without building a flow: this runs on every protected request.
    """
    if settings.require_https or settings.client_max_failures:
        flow = credentials_flow(credentials, settings, scopes, source=source)
        return run_with_sync_manager(flow, manager)
    secret = _read_credential(credentials, settings, source)
    verified = manager.validate_api_key(secret, required_scopes=scopes)
    # The usual answer settled without a call; anything else is checked in full.
    return verified if not scopes and type(verified) is VerifiedKey else _accepted(verified, scopes)


async def authenticate_async(
    manager: AsyncKeyManager,
    credentials: RequestCredentials,
    settings: IntegrationSettings,
    scopes: tuple[str, ...] = (),
    *,
    source: str = "integration",
) -> VerifiedKey:
    """The async twin of :func:`authenticate_sync`."""
    if settings.require_https or settings.client_max_failures:
        flow = credentials_flow(credentials, settings, scopes, source=source)
        return await run_with_async_manager(flow, manager)
    secret = _read_credential(credentials, settings, source)
    verified = await manager.validate_api_key(secret, required_scopes=scopes)
    return verified if not scopes and type(verified) is VerifiedKey else _accepted(verified, scopes)


# ----------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class CoreResponse:
    """A framework-free HTTP response: status, extra headers and a JSON body."""

    status: int
    body: Mapping[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()

    media_type = "application/json"

    def content(self) -> bytes:
        """The encoded JSON body (empty for a body-less response such as 204)."""
        if self.body is None:
            return b""
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()


# Internal argument names → the JSON names clients see.
_JSON_FIELD_NAMES = {
    "user_id": "userId",
    "key_id": "id",
    "required_scopes": "scopes",
    "include_invalid": "includeInvalid",
}


def json_field_name(name: str) -> str:
    """Return the JSON name of an argument named in an :class:`InvalidInputError`."""
    return _JSON_FIELD_NAMES.get(name, name)


def _challenge(realm: str, error: str | None = None, **params: str) -> str:
    parts = [f'realm="{realm}"']
    if error is not None:
        parts.append(f'error="{error}"')
    for name, value in params.items():
        parts.append(f'{name}="{_DESCRIPTION_UNSAFE_RE.sub("", value)}"')
    return "Bearer " + ", ".join(parts)


def _retry_after(seconds: float | None, default: int) -> int:
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return default
    return min(math.ceil(seconds), 86400)


def error_response(exc: APIKeysError, settings: IntegrationSettings | None = None) -> CoreResponse:
    """Map any :class:`APIKeysError` to its HTTP answer, through its ``status_code``.

    Messages of 5xx errors are replaced by the class default: a backend's
    message may name hosts or drivers, which callers have no need to see;
    they are logged instead (logger ``apikeys.integrations``, level WARNING).
    """
    settings = settings or _DEFAULT_SETTINGS
    status = exc.status_code
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    headers: list[tuple[str, str]] = []
    if status >= 500:
        # The body gets the generic message; the log keeps the reason for operators.
        # apikeys error messages never hold a secret.
        logger.warning("API key request failed: %s: %s", type(exc).__name__, exc.message)
        body["message"] = type(exc).default_message
    if isinstance(exc, MissingKeyError):
        headers.append(("WWW-Authenticate", _challenge(settings.realm)))
    elif isinstance(exc, InsufficientScopeError):
        body["missingScopes"] = list(exc.missing_scopes)
        headers.append(
            (
                "WWW-Authenticate",
                _challenge(
                    settings.realm, "insufficient_scope", scope=" ".join(exc.missing_scopes)
                ),
            )
        )
    elif isinstance(exc, InvalidKeyError) and settings.invalid_key_status == 401:
        status = 401
        headers.append(
            (
                "WWW-Authenticate",
                _challenge(settings.realm, "invalid_token", error_description=exc.message),
            )
        )
    elif isinstance(exc, InvalidRequestError):
        body["errors"] = [{"field": e.field, "message": e.message} for e in exc.errors]
    elif isinstance(exc, InvalidInputError):
        body["errors"] = (
            [{"field": json_field_name(exc.field), "message": exc.message}] if exc.field else []
        )
    elif isinstance(exc, RateLimitedError | BackendUnavailableError):
        if isinstance(exc, RevocationIncompleteError):
            body["stillActive"] = list(exc.still_active)  # the caller's own key ids
        seconds = _retry_after(exc.retry_after, settings.retry_after)
        body["retryAfter"] = seconds
        headers.append(("Retry-After", str(seconds)))
    return CoreResponse(status=status, body=body, headers=tuple(headers))


__all__ = [
    "API_KEY_ATTRIBUTE",
    "MAX_CREDENTIAL_LENGTH",
    "ASGICredentials",
    "CoreResponse",
    "FieldError",
    "HeaderSource",
    "InsecureTransportError",
    "IntegrationSettings",
    "InvalidRequestError",
    "ManagerCall",
    "PairCredentials",
    "Peer",
    "RequestCredentials",
    "WSGICredentials",
    "authenticate_async",
    "authenticate_sync",
    "authentication_flow",
    "check_exempt_paths",
    "credentials_flow",
    "error_response",
    "extract_credential",
    "is_async_manager",
    "is_exempt",
    "json_field_name",
    "required_scopes",
    "resolve_client",
    "run_with_async_manager",
    "run_with_sync_manager",
    "split_config",
]
