"""Framework-free HTTP answers: :class:`CoreResponse`, and the one for every error.

- No key → 401 with ``WWW-Authenticate: Bearer``; a refused key → 403 (or
  401 with ``error="invalid_token"`` for RFC 6750 clients); a missing scope →
  403 ``insufficient_scope``; backend down → 503 with ``Retry-After``.
- Error bodies are ``{"code": ..., "message": ...}`` plus ``missingScopes``,
  ``errors`` or ``retryAfter`` where they apply: never a secret, never a trace.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apikeys._errors import (
    APIKeysError,
    BackendUnavailableError,
    InsufficientScopeError,
    InvalidInputError,
    InvalidKeyError,
    InvalidRequestError,
    MissingKeyError,
    RateLimitedError,
    RevocationIncompleteError,
)
from apikeys.integrations._settings import DEFAULT_SETTINGS, IntegrationSettings

logger = logging.getLogger("apikeys.integrations")

# Characters RFC 6750 allows inside a quoted error_description.
_DESCRIPTION_UNSAFE_RE = re.compile(r"[^ !#-\[\]-~]")


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
    settings = settings or DEFAULT_SETTINGS
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
        challenge = _challenge(
            settings.realm, "insufficient_scope", scope=" ".join(exc.missing_scopes)
        )
        headers.append(("WWW-Authenticate", challenge))
    elif isinstance(exc, InvalidKeyError) and settings.invalid_key_status == 401:
        status = 401
        challenge = _challenge(settings.realm, "invalid_token", error_description=exc.message)
        headers.append(("WWW-Authenticate", challenge))
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


__all__ = ["CoreResponse", "error_response", "json_field_name"]
