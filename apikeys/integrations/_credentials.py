"""The one API key a request presents, read from a WSGI environ or an ASGI scope.

Credentials come from ``Authorization: Bearer <key>`` and ``X-API-Key``
(configurable); a key in the query string is read only when enabled. Header
names match case-insensitively; surrounding whitespace and the case of
``Bearer`` do not matter; the same key in two different key headers
(``Authorization`` and ``X-API-Key``) is fine. The values of one key header
sent more than once are combined as a WSGI server combines them, into a list,
which is never a key: refused (403), or no key at all when an
``Authorization`` list does not start with ``Bearer``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote_plus

from apikeys._errors import InvalidKeyError, MissingKeyError
from apikeys.integrations._clients import Peer, resolve_client, text
from apikeys.integrations._settings import IntegrationSettings

# Longer than any key any backend issues, short enough to refuse garbage at once.
MAX_CREDENTIAL_LENGTH = 512
# A header value longer than this is refused without being parsed further.
MAX_HEADER_VALUE_LENGTH = 8192

_REPEATED_MESSAGE = "An API key header was sent more than once, or holds a list; send one key"


def _credential_from(value: str, bearer: bool) -> str | None:
    """Return the key inside one header or query value, or ``None`` if there is none.

    Raises:
        InvalidKeyError: The value holds something that cannot be a key.
    """
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


def _combined(fields: list[tuple[bytes, bytes]]) -> list[tuple[str | bytes, bool]]:
    """One value per key header: the values of a repeated header joined with ``", "``.

    A recipient may combine repeated fields so (RFC 9110, section 5.3) and WSGI
    servers always do before the app sees them, so every adapter gets the same
    answer: a key header sent more than once holds a list, which is no key
    (:func:`_credential_from`). ``fields`` are ``(lower-case name, value)``;
    each value comes back marked ``True`` if it is an ``Authorization``.
    """
    merged: dict[bytes, str | bytes] = {}
    for name, value in fields:
        earlier = merged.get(name)
        merged[name] = value if earlier is None else f"{text(earlier)}, {text(value)}"
    return [(value, name == b"authorization") for name, value in merged.items()]


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
            credential = _credential_from(text(value), bearer)
        except InvalidKeyError as exc:
            if refusal is None or exc.message == _REPEATED_MESSAGE:
                refusal = exc
            continue
        if credential is not None:
            found.append(credential)
    if refusal is not None:
        raise refusal
    return found


def _query_pairs(query_string: str) -> Iterator[tuple[str, str]]:
    """``(name, value)`` pairs of a raw query string, decoded as ``parse_qsl`` does."""
    if not query_string:
        return
    for part in query_string.split("&"):
        if part:
            name, _, value = part.partition("=")
            yield unquote_plus(name), unquote_plus(value)


class RequestCredentials(ABC):
    """What one request presents, read from the native request only when asked.

    Adapters wrap their request in :class:`WSGICredentials` (Flask, Django)
    or :class:`ASGICredentials` (Starlette, FastAPI).
    """

    __slots__ = ()

    @abstractmethod
    def credential(self, settings: IntegrationSettings) -> str:
        """The one API key the request presents (see the module's docstring).

        Raises:
            MissingKeyError: No key was sent (401).
            InvalidKeyError: A value cannot be a key (too long, not visible
                ASCII, a list), a key header came more than once, or several
                different keys were sent (403).
        """

    @abstractmethod
    def client(self, settings: IntegrationSettings) -> Peer | None:
        """The client behind any trusted proxies (see :func:`resolve_client`), if known."""


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
        values: list[tuple[str | bytes, bool]] = [
            (environ[key], bearer)
            for key, bearer in settings.header_plan.environ_keys
            if key in environ
        ]
        return _settle(_credentials_in(values), self._query, settings)

    def _query(self) -> Iterator[tuple[str, str]]:
        return _query_pairs(text(self.environ.get("QUERY_STRING") or ""))

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
        fields = [(name, value) for name, value in self.scope["headers"] if name in wanted]
        return _settle(_credentials_in(_combined(fields)), self._query, settings)

    def _query(self) -> Iterator[tuple[str, str]]:
        return _query_pairs(text(self.scope.get("query_string") or b""))

    def client(self, settings: IntegrationSettings) -> Peer | None:
        return resolve_client(self.scope["headers"], Peer.of_asgi(self.scope), settings)


__all__ = [
    "MAX_CREDENTIAL_LENGTH",
    "ASGICredentials",
    "RequestCredentials",
    "WSGICredentials",
]
