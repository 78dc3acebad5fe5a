"""Validation of manager arguments, shared by every backend and free of IO.

Each public manager method checks its arguments here first, so bad input gets
the same clear :class:`InvalidInputError` from every backend, before anything
is written.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from apikeys._errors import InvalidInputError
from apikeys._expiry import MAX_LIFETIME, Expiration, parse_expiration, utcnow
from apikeys._keylimits import Quota, RateLimit
from apikeys._limitstorage import LIMITS_CLAIM
from apikeys._scopes import normalize_scopes

MAX_NAME_LENGTH = 255
MAX_USER_ID_LENGTH = 255
MAX_REASON_LENGTH = 500
MAX_METADATA_BYTES = 8192
MAX_PAGE_SIZE = 100
# SQL's OFFSET is a signed 64-bit integer; larger values crash drivers with OverflowError.
MAX_OFFSET = 2**63 - 1


class Keep(enum.Enum):
    """Sentinel type: keep the current value (see :data:`KEEP`)."""

    KEEP = "keep"


KEEP = Keep.KEEP
"""Keep the current value: ``rotate_api_key(expiration=KEEP)`` (the default) keeps the old
key's expiry; ``update_api_key_limits(rate_limit=KEEP, quota=KEEP)`` (the defaults) keep a limit."""


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """Validated arguments of ``create_api_key``."""

    user_id: str
    name: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    metadata: dict[str, Any]
    now: datetime
    created_by: str | None = None
    rate_limit: RateLimit | None = None
    quota: Quota | None = None


@dataclass(frozen=True, slots=True)
class LimitChange:
    """Validated arguments of ``update_api_key_limits``: each limit, or :data:`KEEP`."""

    rate_limit: RateLimit | Keep | None
    quota: Quota | Keep | None


def check_user_id(user_id: object) -> str:
    """Return a valid owner id or raise :class:`InvalidInputError`."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInputError("user_id must be a non-empty string", field="user_id")
    if len(user_id) > MAX_USER_ID_LENGTH or not user_id.isprintable():
        raise InvalidInputError(
            f"user_id must be at most {MAX_USER_ID_LENGTH} printable characters", field="user_id"
        )
    return user_id


def check_key_id(key_id: object) -> str:
    """Return a plausible key id or raise :class:`InvalidInputError`."""
    if not isinstance(key_id, str) or not key_id or len(key_id) > 64 or not key_id.isprintable():
        raise InvalidInputError("key_id must be a non-empty string", field="key_id")
    return key_id


def check_name(name: object) -> str:
    """Return a stripped, non-empty key name or raise :class:`InvalidInputError`."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("name must be a non-empty string", field="name")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidInputError(
            f"name must be at most {MAX_NAME_LENGTH} printable characters", field="name"
        )
    return name


def _has_only_string_keys(value: object) -> bool:
    # Iterative, so depth is no concern; json.dumps has already refused cycles.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, Mapping):
            if not all(isinstance(key, str) for key in item):
                return False
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return True


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return metadata as a JSON-safe dict of at most 8 KiB, or raise."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidInputError("metadata must be a mapping with string keys", field="metadata")
    if LIMITS_CLAIM in metadata:
        # The Clerk backend keeps a key's limits in its claims under this name;
        # refused on every backend, so metadata moves between them unchanged.
        raise InvalidInputError(
            f"metadata must not use the top-level name {LIMITS_CLAIM!r}:"
            " it is reserved for the key's limits",
            field="metadata",
        )
    try:
        encoded = json.dumps(dict(metadata), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"metadata must be JSON-serialisable: {exc}", field="metadata"
        ) from None
    except RecursionError:
        raise InvalidInputError("metadata is nested too deeply", field="metadata") from None
    if not _has_only_string_keys(metadata):
        # json.dumps would silently turn nested 1, True or None keys into strings.
        raise InvalidInputError("metadata must be a mapping with string keys", field="metadata")
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"metadata must be at most {MAX_METADATA_BYTES} bytes as JSON", field="metadata"
        )
    result: dict[str, Any] = json.loads(encoded)
    return result


def check_reason(reason: object) -> str | None:
    """Return a revocation reason (or ``None``) or raise :class:`InvalidInputError`.

    Control characters, NUL above all, and lone surrogates are refused here,
    before any IO: a database may refuse to store them, and a revocation must
    never fail on its reason.
    """
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise InvalidInputError(
            f"reason must be a string of at most {MAX_REASON_LENGTH} characters", field="reason"
        )
    if not reason.isprintable():
        raise InvalidInputError(
            "reason must hold printable characters only (no control characters,"
            " line breaks or unpaired surrogates)",
            field="reason",
        )
    return reason


def check_created_by(created_by: object) -> str | None:
    """Return the id of the key creating a key (or ``None``) or raise."""
    if created_by is None:
        return None
    try:
        return check_key_id(created_by)
    except InvalidInputError:
        raise InvalidInputError(
            "created_by must be the id of the key creating this one, or None", field="created_by"
        ) from None


_Limit = TypeVar("_Limit", RateLimit, Quota)


def _limit_of(value: object, kind: type[_Limit], field: str, example: str) -> _Limit | None:
    if value is None or isinstance(value, kind):
        return value
    if isinstance(value, str):
        return kind.parse(value)
    raise InvalidInputError(
        f"{field} must be a {kind.__name__}, its short form such as {example}, or None",
        field=field,
    )


def check_rate_limit(rate_limit: object) -> RateLimit | None:
    """Return a rate limit from a :class:`RateLimit`, its short form (``100/1m``) or ``None``."""
    return _limit_of(rate_limit, RateLimit, "rate_limit", "100/1m")


def check_quota(quota: object) -> Quota | None:
    """Return a quota from a :class:`Quota`, its short form (``100000/30d``, ``500``) or ``None``."""
    return _limit_of(quota, Quota, "quota", "100000/30d or 500")


def check_limit_change(rate_limit: object, quota: object) -> LimitChange:
    """Validate both arguments of ``update_api_key_limits`` (:data:`KEEP` keeps a limit)."""
    return LimitChange(
        rate_limit=KEEP if rate_limit is KEEP else check_rate_limit(rate_limit),
        quota=KEEP if quota is KEEP else check_quota(quota),
    )


def check_owner(user_id: object) -> str | None:
    """Return the owner a lookup is scoped to (or ``None``: any owner) or raise."""
    return None if user_id is None else check_user_id(user_id)


def check_page(limit: object, offset: object) -> tuple[int, int]:
    """Return a valid ``(limit, offset)`` pair or raise :class:`InvalidInputError`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInputError(
            f"limit must be an integer from 1 to {MAX_PAGE_SIZE}", field="limit"
        )
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise InvalidInputError(f"offset must be an integer from 0 to {MAX_OFFSET}", field="offset")
    return limit, offset


def check_grace(grace: object) -> timedelta:
    """Return a grace period of 0 to 100 years from a ``timedelta`` or seconds."""
    if isinstance(grace, timedelta):
        value = grace
    elif isinstance(grace, int | float) and not isinstance(grace, bool):
        try:
            value = timedelta(seconds=grace)
        except OverflowError:
            raise InvalidInputError("grace is too long", field="grace") from None
        except ValueError:  # NaN
            raise InvalidInputError("grace must be a number of seconds", field="grace") from None
    else:
        raise InvalidInputError("grace must be a timedelta or a number of seconds", field="grace")
    if value < timedelta(0):
        raise InvalidInputError("grace must not be negative", field="grace")
    # Bounded like expirations, so that "now + grace" stays a valid datetime.
    if value > MAX_LIFETIME:
        raise InvalidInputError("grace is too long", field="grace")
    return value


def check_required_scopes(required_scopes: Iterable[str] | str) -> tuple[str, ...]:
    """Return concrete required scopes (no wildcards) or raise.

    Only an empty sequence (``()``, ``[]``) requires no scope. ``None`` and a
    blank string are refused rather than read as "none": they are what a
    missing or empty setting looks like, and a route meant to require a scope
    would silently require none. A string is split on whitespace, so
    ``"read:data write:data"`` is two scopes, as everywhere in apikeys.

    Raises:
        InvalidInputError: ``None``, a blank string, a blank or malformed
            scope, a wildcard, or too many scopes (``field="required_scopes"``).
    """
    if required_scopes is None:
        raise InvalidInputError(
            "required_scopes is None; pass () to require no scope", field="required_scopes"
        )
    if isinstance(required_scopes, str) and not required_scopes.split():
        raise InvalidInputError(
            "required_scopes is a blank string; pass () to require no scope",
            field="required_scopes",
        )
    return normalize_scopes(required_scopes, allow_wildcards=False, field="required_scopes")


def build_create_request(
    user_id: object,
    name: object,
    scopes: Iterable[str] | str | None,
    expiration: Expiration,
    metadata: Mapping[str, Any] | None,
    *,
    now: datetime | None = None,
    created_by: object = None,
    rate_limit: object = None,
    quota: object = None,
) -> CreateRequest:
    """Validate every argument of ``create_api_key`` at once."""
    now = now or utcnow()
    return CreateRequest(
        user_id=check_user_id(user_id),
        name=check_name(name),
        scopes=normalize_scopes(scopes),
        expires_at=parse_expiration(expiration, now=now),
        metadata=check_metadata(metadata),
        now=now,
        created_by=check_created_by(created_by),
        rate_limit=check_rate_limit(rate_limit),
        quota=check_quota(quota),
    )


__all__ = [
    "KEEP",
    "CreateRequest",
    "Keep",
    "LimitChange",
    "build_create_request",
    "check_created_by",
    "check_grace",
    "check_key_id",
    "check_limit_change",
    "check_metadata",
    "check_name",
    "check_owner",
    "check_page",
    "check_quota",
    "check_rate_limit",
    "check_reason",
    "check_required_scopes",
    "check_user_id",
]
