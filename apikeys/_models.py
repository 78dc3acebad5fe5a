"""Frozen data models. None of them ever holds a secret except :class:`NewAPIKey`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from apikeys._deprecation import warn_renamed
from apikeys._expiry import is_expired
from apikeys._keylimits import Quota, RateLimit
from apikeys._meter import Allowance
from apikeys._scopes import missing_scopes

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _read_only(*_: object, **__: object) -> NoReturn:
    raise TypeError(
        "API key metadata is read-only (a cached validation shares it with later requests);"
        " model_dump() gives a mutable copy"
    )


class _ReadOnlyDict(dict[str, Any]):
    """A dict that refuses changes: frozen models stay frozen all the way down.

    A validation served from the cache is one shared object, so a request that
    changed its metadata would change what later requests see.
    """

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[_ReadOnlyDict], tuple[dict[str, Any]]]:
        return type(self), (dict(self),)


class _ReadOnlyList(list[Any]):
    """A list that refuses changes (see :class:`_ReadOnlyDict`)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __reduce__(self) -> tuple[type[_ReadOnlyList], tuple[list[Any]]]:
        return type(self), (list(self),)


def _freeze(value: Any) -> Any:
    # Iterative, not recursive: metadata may nest as deeply as its size allows.
    holder: list[Any] = [value]
    pending: list[tuple[Any, Any]] = [(holder, 0)]  # (container, key) of items to freeze
    # id of an original container -> its frozen copy: shared parts stay shared, and a
    # cycle (possible in a model built by hand) ends instead of looping forever.
    frozen_copies: dict[int, Any] = {}
    while pending:
        container, key = pending.pop()
        item = container[key]
        if not isinstance(item, dict | list):
            continue
        frozen = frozen_copies.get(id(item))
        if frozen is None:
            if isinstance(item, dict):
                frozen = _ReadOnlyDict(item)
                pending.extend((frozen, child) for child in frozen)
            else:
                frozen = _ReadOnlyList(item)
                pending.extend((frozen, index) for index in range(len(frozen)))
            frozen_copies[id(item)] = frozen
        # The read-only types refuse __setitem__; fill them through their base class.
        if isinstance(container, dict):
            dict.__setitem__(container, key, frozen)
        else:
            list.__setitem__(container, key, frozen)
    return holder[0]


def _freeze_metadata(value: dict[str, Any]) -> dict[str, Any]:
    frozen: dict[str, Any] = _freeze(value)
    return frozen


class APIKey(BaseModel):
    """A stored API key as listed or fetched: everything but its secret.

    Attributes:
        id: The key's public id (safe to log and to put in URLs).
        user_id: The owner.
        hint: A display hint (prefix, first and last characters) to recognise the key.
        created_by: The id of the key that created this one (through ``POST /api-keys``),
            or ``None`` for keys made by server code or the CLI. Revoking or deleting
            a key revokes every key it created, and theirs in turn.
        rate_limit: The calls the key may make per window, or ``None``: no rate limit.
        quota: The credits the key may spend per period (or ever), or ``None``: no quota.
            A key made by rotation carries its predecessor's limits and spends from
            the same counts: rotating never refills them.
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
    created_by: str | None = None
    rate_limit: RateLimit | None = None
    quota: Quota | None = None

    _freeze_metadata = field_validator("metadata")(_freeze_metadata)

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
    """What a successful validation returns: who the caller is and what it may do.

    Attributes:
        id: The key's public id, as :attr:`APIKey.id`.
        user_id: The owner.
        rate_limit: The calls the key may make per window, or ``None``, as :attr:`APIKey.rate_limit`.
        quota: The credits the key may spend per period (or ever), or ``None``.
        quota_anchor: When the quota's first period began (when the quota was set);
            its periods follow each other from there. ``None`` without a quota.
        meter_id: The id of the key whose counts this key spends from: its own, or,
            for a key made by rotation, the first key of its rotation lineage. Both
            keys of a rotation's grace period share one meter.
        usage: What this call left of the key's limits (the rate limit's window and
            the quota), for the ``RateLimit`` header fields; ``None`` for a key without
            limits. It belongs to one call: each call gets its own copy of the key.
            Left out of ``model_dump()`` and JSON.
    """

    model_config = _FROZEN

    id: str
    user_id: str
    name: str
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    rate_limit: RateLimit | None = None
    quota: Quota | None = None
    quota_anchor: datetime | None = None
    meter_id: str = ""
    usage: Allowance | None = Field(default=None, exclude=True)

    _freeze_metadata = field_validator("metadata")(_freeze_metadata)

    @model_validator(mode="before")
    @classmethod
    def _accept_key_id(cls, data: Any) -> Any:
        # The deprecated ``key_id=`` is taken as ``id=``; given with ``id`` too, it stays
        # and is refused as an unknown field. The warning points past pydantic's one frame
        # (``__init__`` or ``model_validate``) at the code that built the model.
        if isinstance(data, dict) and "key_id" in data and "id" not in data:
            warn_renamed("VerifiedKey(key_id=...)", "VerifiedKey(id=...)", stacklevel=4)
            data = {("id" if name == "key_id" else name): value for name, value in data.items()}
        if isinstance(data, dict) and not data.get("meter_id") and "id" in data:
            data = {**data, "meter_id": data["id"]}  # a key spends from its own meter
        return data

    @property
    def key_id(self) -> str:
        """Deprecated alias of :attr:`id`."""
        warn_renamed("VerifiedKey.key_id", "VerifiedKey.id")
        return self.id

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
