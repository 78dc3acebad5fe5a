"""The one JSON shape of a key, used by the HTTP endpoints and the command line's ``--json``.

Field names are camelCase, instants ISO 8601 in UTC with a ``Z``; a stored key never carries
its secret, a key just created carries it once (``secret``). ``status`` spells out ``active``::

    {"id": "4xJ…", "userId": "user_123", "name": "CI", "scopes": ["read:data"],
     "createdAt": "2026-12-03T07:00:00Z", "expiresAt": null, "lastUsedAt": null,
     "revokedAt": null, "revocationReason": null, "createdBy": null,
     "active": true, "status": "active", "hint": "apk_14xJ…WNUO", "metadata": {},
     "rateLimit": {"limit": 100, "window": 60}, "quota": {"limit": 100000, "period": 2592000}}

``rateLimit`` and ``quota`` are ``null`` for a key without them; windows and periods are
seconds, and a quota's ``period`` is ``null`` for a one-off balance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apikeys._keylimits import Quota, RateLimit
from apikeys._models import APIKey, APIKeyPage, NewAPIKey, VerifiedKey


def isoformat(moment: datetime | None) -> str | None:
    """``2026-12-03T07:00:00Z``, or ``None``."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def key_status(key: APIKey) -> str:
    """``revoked``, ``expired`` or ``active``: revocation wins over expiry."""
    if key.revoked:
        return "revoked"
    if key.expired:
        return "expired"
    return "active"


def key_to_json(key: APIKey) -> dict[str, Any]:
    """The JSON form of a stored key: never its secret."""
    return {
        "id": key.id,
        "userId": key.user_id,
        "name": key.name,
        "scopes": list(key.scopes),
        "createdAt": isoformat(key.created_at),
        "expiresAt": isoformat(key.expires_at),
        "lastUsedAt": isoformat(key.last_used_at),
        "revokedAt": isoformat(key.revoked_at),
        "revocationReason": key.revocation_reason,
        "createdBy": key.created_by,
        "active": key.active,
        "status": key_status(key),
        "hint": key.hint,
        "metadata": dict(key.metadata),
        "rateLimit": rate_limit_to_json(key.rate_limit),
        "quota": quota_to_json(key.quota),
    }


def rate_limit_to_json(rate_limit: RateLimit | None) -> dict[str, Any] | None:
    """``{"limit": 100, "window": 60}`` (seconds), or ``None``."""
    return None if rate_limit is None else rate_limit.model_dump(mode="json")


def quota_to_json(quota: Quota | None) -> dict[str, Any] | None:
    """``{"limit": 100000, "period": 2592000}`` (seconds; ``null`` for a one-off balance), or ``None``."""
    return None if quota is None else quota.model_dump(mode="json")


def new_key_to_json(new_key: NewAPIKey) -> dict[str, Any]:
    """The JSON form of a key just created: the one time its secret is shown."""
    return {**key_to_json(new_key.api_key), "secret": new_key.secret}


def page_to_json(page: APIKeyPage) -> dict[str, Any]:
    """One page of a listing, with ``hasMore``."""
    return {
        "items": [key_to_json(key) for key in page.items],
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
        "hasMore": page.has_more,
    }


def verified_key_to_json(verified: VerifiedKey) -> dict[str, Any]:
    """The JSON form of a successful validation, in the same naming."""
    return {
        "keyId": verified.id,
        "userId": verified.user_id,
        "name": verified.name,
        "scopes": list(verified.scopes),
        "expiresAt": isoformat(verified.expires_at),
        "metadata": dict(verified.metadata),
    }
