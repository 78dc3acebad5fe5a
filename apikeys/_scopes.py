"""Scope syntax and matching, free of IO.

A scope is one or more ``:``-separated segments of ``[A-Za-z0-9_.-]``, such as
``read:data`` or ``billing:invoices:write``. A *held* scope whose last segment
is ``*`` is a wildcard that covers every scope extending its other segments:
``data:*`` covers ``data:read`` and ``data:read:all`` but not ``data`` itself
nor ``database:read``. A bare ``*`` is not a scope: no key can hold everything
by accident. Required scopes are always concrete (no ``*``).

:data:`MANAGEMENT_SCOPE` is the scope the web integrations' ``/api-keys``
endpoints require by default; ``keys:*`` covers it like any wildcard.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from apikeys._errors import InvalidInputError

MANAGEMENT_SCOPE: Final = "keys:manage"
"""The scope a key needs to list, create and revoke its owner's keys through ``/api-keys``.

Issue the first such key outside ``/api-keys`` (``apikeys create USER NAME --scope
keys:manage``, or :func:`apikeys.create_api_key` behind the app's own login);
``management_scope=None`` in the integration settings opens ``/api-keys`` to every key.
"""

MAX_SCOPE_LENGTH = 128
MAX_SCOPES = 64

_SEGMENT = r"[A-Za-z0-9_.\-]+"
_CONCRETE_SCOPE_RE = re.compile(rf"{_SEGMENT}(?::{_SEGMENT})*")
_WILDCARD_SCOPE_RE = re.compile(rf"{_SEGMENT}(?::{_SEGMENT})*:\*")


def is_wildcard(scope: str) -> bool:
    """Tell whether a (valid) scope is a wildcard such as ``data:*``."""
    return scope.endswith(":*")


def normalize_scopes(
    scopes: Iterable[str] | str | None, *, allow_wildcards: bool = True, field: str = "scopes"
) -> tuple[str, ...]:
    """Validate scopes and return them de-duplicated, in first-seen order.

    A single string is split on whitespace (the OAuth convention), so
    ``"read:data write:data"`` and ``["read:data", "write:data"]`` agree.

    Raises:
        InvalidInputError: A scope is empty, too long, malformed, or a
            wildcard where none is allowed; or there are too many.
    """
    if scopes is None:
        return ()
    items: Iterable[object] = scopes.split() if isinstance(scopes, str) else scopes
    try:
        iterator = iter(items)
    except TypeError:
        raise InvalidInputError(
            f"{field} must be a string or an iterable of strings, not {type(scopes).__name__}",
            field=field,
        ) from None
    seen: dict[str, None] = {}
    for scope in iterator:
        if not isinstance(scope, str):
            raise InvalidInputError(
                f"scopes must be strings, got {type(scope).__name__}", field=field
            )
        if len(scope) > MAX_SCOPE_LENGTH:
            raise InvalidInputError(f"scope longer than {MAX_SCOPE_LENGTH} characters", field=field)
        concrete = _CONCRETE_SCOPE_RE.fullmatch(scope) is not None
        wildcard = allow_wildcards and _WILDCARD_SCOPE_RE.fullmatch(scope) is not None
        if not (concrete or wildcard):
            raise InvalidInputError(
                f"malformed scope {scope!r}: use segments of letters, digits, '_', '.', '-'"
                " joined by ':'" + (", optionally ending in ':*'" if allow_wildcards else ""),
                field=field,
            )
        seen[scope] = None
        # Checked as we go, so an endless iterable is refused instead of hanging.
        if len(seen) > MAX_SCOPES:
            raise InvalidInputError(f"at most {MAX_SCOPES} scopes per key", field=field)
    return tuple(seen)


def scope_covers(held: str, wanted: str) -> bool:
    """Tell whether one held scope grants ``wanted`` (itself possibly a wildcard).

    >>> scope_covers("data:*", "data:read"), scope_covers("data:*", "data")
    (True, False)
    """
    if held == wanted:
        return True
    if not is_wildcard(held):
        return False
    return wanted.startswith(held[:-1]) and len(wanted) > len(held) - 1


def missing_scopes(held: Iterable[str], required: Iterable[str]) -> tuple[str, ...]:
    """Return the required scopes that no held scope covers, in order.

    Like :func:`normalize_scopes`, a single string is split on whitespace.

    >>> missing_scopes(["data:*"], "data:read admin")
    ('admin',)
    """
    # Iterating a string would yield its characters: "read:data" -> "r", "e", ...
    held = tuple(held.split() if isinstance(held, str) else held)
    wanted = required.split() if isinstance(required, str) else required
    return tuple(scope for scope in wanted if not any(scope_covers(have, scope) for have in held))


__all__ = ["MANAGEMENT_SCOPE", "is_wildcard", "missing_scopes", "normalize_scopes", "scope_covers"]
