"""Frozen data models. None of them ever holds a secret except :class:`NewAPIKey`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from apikeys._expiry import is_expired
from apikeys._scopes import missing_scopes

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class APIKey(BaseModel):
    """A stored API key as listed or fetched: everything but its secret.

    Attributes:
        id: The key's public id (safe to log and to put in URLs).
        user_id: The owner.
        hint: A display hint (prefix, first and last characters) to recognise the key.
    """

    model_config = _FROZEN

    id: str
    user_id: str
    name: str
    scopes: tuple[str, ...] = ()
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    hint: str = ""

    @property
    def revoked(self) -> bool:
        """Whether the key has been revoked."""
        return self.revoked_at is not None

    @property
    def expired(self) -> bool:
        """Whether the key's expiry has passed."""
        return is_expired(self.expires_at)

    @property
    def active(self) -> bool:
        """Whether the key would currently validate (neither revoked nor expired)."""
        return not self.revoked and not self.expired


class NewAPIKey(APIKey):
    """A key just created or rotated, with its secret: shown once, keep it safe.

    The secret is left out of ``repr`` and of ``model_dump()``/``model_dump_json()``;
    read it from :attr:`secret` and hand it to the user exactly once.
    """

    secret: str = Field(repr=False, exclude=True)

    @property
    def api_key(self) -> APIKey:
        """The stored key without its secret."""
        return APIKey.model_validate(self.model_dump())


class VerifiedKey(BaseModel):
    """What a successful validation returns: who the caller is and what it may do."""

    model_config = _FROZEN

    key_id: str
    user_id: str
    name: str
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def has_scopes(self, *required: str) -> bool:
        """Tell whether the key holds every one of ``required`` (wildcards honoured)."""
        return not missing_scopes(self.scopes, required)


class APIKeyPage(BaseModel):
    """One page of :meth:`KeyManager.list_api_keys` results, newest first."""

    model_config = _FROZEN

    items: tuple[APIKey, ...]
    total: int
    limit: int
    offset: int

    @property
    def has_more(self) -> bool:
        """Whether another page follows this one."""
        return self.offset + len(self.items) < self.total


__all__ = ["APIKey", "APIKeyPage", "NewAPIKey", "VerifiedKey"]
