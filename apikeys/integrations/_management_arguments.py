"""The arguments of an ``/api-keys`` call, read from its query and body and checked.

Bodies are capped in size and checked field by field: wrong types, unknown
or repeated fields, past expirations → 422 listing every field error. A new
key's scopes must be covered by the caller's (no escalation; 403
``insufficient_scope`` naming what is missing), and it cannot outlive the
caller: without an expiration it gets the caller's; a later one is 403. Nor can
it spend faster: without a ``rateLimit`` or ``quota`` it gets the caller's, and
looser ones are 403 ``limits_beyond_caller``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from apikeys._arguments import (
    KEEP,
    MAX_PAGE_SIZE,
    Keep,
    check_key_id,
    check_metadata,
    check_name,
    check_reason,
)
from apikeys._errors import (
    FieldError,
    ForeignUserError,
    InsufficientScopeError,
    InvalidInputError,
    InvalidRequestError,
    LifetimeEscalationError,
    LimitEscalationError,
)
from apikeys._expiry import parse_expiration
from apikeys._keylimits import (
    Quota,
    RateLimit,
    first_problem,
    quota_within,
    rate_limit_within,
)
from apikeys._models import VerifiedKey
from apikeys._scopes import missing_scopes, normalize_scopes
from apikeys.integrations._clients import HeaderSource, text_pairs
from apikeys.integrations._settings import IntegrationSettings

_T = TypeVar("_T")

DEFAULT_PAGE_SIZE: Final = 50
MAX_OFFSET: Final = 999_999_999
_INTEGER_RE = re.compile(r"[0-9]{1,9}")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}

_CREATE_FIELDS = frozenset(
    {"name", "scopes", "expiration", "userId", "metadata", "rateLimit", "quota"}
)
_DELETE_FIELDS = frozenset({"id", "reason"})


def first_values(query: HeaderSource) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in text_pairs(query):
        values.setdefault(name, value)
    return values


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise InvalidRequestError([FieldError(name, "appears more than once")])
        result[name] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(body: bytes, settings: IntegrationSettings) -> dict[str, Any]:
    """Decode a request body that must be one JSON object (an empty body is ``{}``).

    Raises:
        InvalidRequestError: The body is too large, not UTF-8 JSON, nested too
            deeply, not an object, or repeats a field.
    """
    if len(body) > settings.max_body_bytes:
        raise InvalidRequestError(
            [FieldError("body", f"must be at most {settings.max_body_bytes} bytes")]
        )
    if not body.strip():
        return {}
    try:
        decoded = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_refuse_constant,
        )
    except InvalidRequestError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequestError([FieldError("body", "must be a JSON object")]) from None
    if not isinstance(decoded, dict):
        raise InvalidRequestError([FieldError("body", "must be a JSON object")])
    return decoded


def _unknown_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> list[FieldError]:
    return [FieldError(name, "unknown field") for name in sorted(set(body) - allowed)]


def page_arguments(query: Mapping[str, str]) -> tuple[int, int, bool]:
    errors: list[FieldError] = []
    limit, offset, include_invalid = DEFAULT_PAGE_SIZE, 0, False
    if "limit" in query:
        text = query["limit"].strip()
        if _INTEGER_RE.fullmatch(text) and 1 <= int(text) <= MAX_PAGE_SIZE:
            limit = int(text)
        else:
            errors.append(FieldError("limit", f"must be an integer from 1 to {MAX_PAGE_SIZE}"))
    if "offset" in query:
        text = query["offset"].strip()
        if _INTEGER_RE.fullmatch(text):
            offset = int(text)
        else:
            errors.append(FieldError("offset", "must be a non-negative integer"))
    if "includeInvalid" in query:
        flag = _BOOLEANS.get(query["includeInvalid"].strip().lower())
        if flag is None:
            errors.append(FieldError("includeInvalid", "must be true or false"))
        else:
            include_invalid = flag
    if errors:
        raise InvalidRequestError(errors)
    return limit, offset, include_invalid


@dataclass(frozen=True, slots=True)
class CreateArguments:
    name: str
    scopes: tuple[str, ...]
    expiration: datetime | None
    metadata: dict[str, Any]
    rate_limit: RateLimit | None
    quota: Quota | None


_LimitT = TypeVar("_LimitT", RateLimit, Quota)


def _limit_field(
    errors: list[FieldError], body: Mapping[str, Any], name: str, model: type[_LimitT]
) -> _LimitT | Keep | None:
    """A ``rateLimit``/``quota`` field: the JSON form of its model, ``null``, or absent (``KEEP``)."""
    if name not in body:
        return KEEP
    value = body[name]
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(FieldError(name, "must be an object or null"))
        return None
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        where, message = first_problem(exc)
        errors.append(FieldError(f"{name}.{where}" if where else name, message))
        return None


def _field(
    errors: list[FieldError], name: str, check: Callable[[Any], _T], value: object
) -> _T | None:
    """Run one core validator, collecting its error under the JSON field ``name``."""
    try:
        return check(value)
    except InvalidInputError as exc:
        errors.append(FieldError(name, exc.message))
        return None


def create_arguments(body: Mapping[str, Any], caller: VerifiedKey) -> CreateArguments:
    errors = _unknown_fields(body, _CREATE_FIELDS)
    name = None
    if "name" in body:
        name = _field(errors, "name", check_name, body["name"])
    else:
        errors.append(FieldError("name", "is required"))
    scopes_value = body.get("scopes", [])
    scopes: tuple[str, ...] = ()
    if isinstance(scopes_value, str | list):
        scopes = _field(errors, "scopes", normalize_scopes, scopes_value) or ()
    else:
        errors.append(FieldError("scopes", "must be a list of strings"))
    expiration_value = body.get("expiration")
    expiration = None
    if expiration_value is not None:
        if isinstance(expiration_value, str):
            expiration = _field(errors, "expiration", parse_expiration, expiration_value)
        else:
            errors.append(
                FieldError("expiration", "must be an ISO 8601 date or date-time, or null")
            )
    metadata_value = body.get("metadata")
    metadata: dict[str, Any] | None = {}
    if metadata_value is not None and not isinstance(metadata_value, dict):
        errors.append(FieldError("metadata", "must be a JSON object"))
    else:
        metadata = _field(errors, "metadata", check_metadata, metadata_value)
    rate_limit = _limit_field(errors, body, "rateLimit", RateLimit)
    quota = _limit_field(errors, body, "quota", Quota)
    user_id = body.get("userId")
    if user_id is not None and not isinstance(user_id, str):
        errors.append(FieldError("userId", "must be a string"))
    if errors or name is None:
        raise InvalidRequestError(errors)
    if user_id is not None and user_id != caller.user_id:
        raise ForeignUserError(key_id=caller.id)
    escalation = missing_scopes(caller.scopes, scopes)
    if escalation:
        raise InsufficientScopeError(
            "A new key's scopes must be covered by the calling key's scopes",
            key_id=caller.id,
            missing_scopes=escalation,
        )
    if caller.expires_at is not None:
        # A key never outlives the key that made it: else a short-lived key could
        # mint a permanent one and keep its access for ever.
        if expiration is None:
            expiration = caller.expires_at
        elif expiration > caller.expires_at:
            raise LifetimeEscalationError(key_id=caller.id)
    # Likewise a key never spends faster than the key that made it: left out, its
    # limits are the caller's; given, they must be no looser.
    if isinstance(rate_limit, Keep):
        rate_limit = caller.rate_limit
    if isinstance(quota, Keep):
        quota = caller.quota
    if not (rate_limit_within(rate_limit, caller.rate_limit) and quota_within(quota, caller.quota)):
        raise LimitEscalationError(key_id=caller.id)
    return CreateArguments(name, scopes, expiration, metadata or {}, rate_limit, quota)


def delete_arguments(
    key_id: str | None, query: HeaderSource, body: Mapping[str, Any]
) -> tuple[str, str | None]:
    """The id to revoke or delete (from the path, the body or the query) and the reason."""
    first = first_values(query)
    errors = _unknown_fields(body, _DELETE_FIELDS)
    candidates = [value for value in (key_id, body.get("id"), first.get("id")) if value is not None]
    if not candidates:
        errors.append(FieldError("id", "is required, in the path, the body or the query"))
    elif any(value != candidates[0] for value in candidates):
        errors.append(FieldError("id", "differs between the path, the body and the query"))
    checked = _field(errors, "id", check_key_id, candidates[0]) if candidates else None
    reason_value = body.get("reason", first.get("reason"))
    reason = _field(errors, "reason", check_reason, reason_value)
    if errors or checked is None:
        raise InvalidRequestError(errors)
    return checked, reason


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_OFFSET",
    "CreateArguments",
    "create_arguments",
    "delete_arguments",
    "first_values",
    "page_arguments",
    "parse_json_body",
]
