"""The checks that follow a successful secret verification, free of IO.

They run only once the caller has proven it holds the secret, so only the
holder of the right secret learns that a key is revoked or expired.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from apikeys._errors import ExpiredKeyError, InsufficientScopeError, RevokedKeyError
from apikeys._expiry import is_expired
from apikeys._models import VerifiedKey
from apikeys._scopes import missing_scopes


def check_key_state(
    key_id: str,
    *,
    revoked: bool,
    expires_at: datetime | None,
    now: datetime | None = None,
) -> None:
    """Raise if a key whose secret was verified is revoked or expired."""
    if revoked:
        raise RevokedKeyError(key_id=key_id)
    if is_expired(expires_at, now):
        raise ExpiredKeyError(key_id=key_id)


def check_scopes(verified: VerifiedKey, required_scopes: Iterable[str]) -> VerifiedKey:
    """Return ``verified`` if it holds every required scope, else raise."""
    if required_scopes:
        missing = missing_scopes(verified.scopes, required_scopes)
        if missing:
            raise InsufficientScopeError(key_id=verified.id, missing_scopes=missing)
    return verified


__all__ = ["check_key_state", "check_scopes"]
