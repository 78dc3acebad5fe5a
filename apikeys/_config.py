"""Settings, read from keyword arguments first, then the environment.

Nothing here runs at import time: :class:`Settings` is built by the factories
(:func:`apikeys.create_key_manager`) when a manager is made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from apikeys._cache import DEFAULT_CACHE_MAX_ENTRIES, DEFAULT_CACHE_TTL
from apikeys._errors import ConfigurationError, InvalidInputError
from apikeys._events import DEFAULT_SUSPICIOUS_FAILURES, DEFAULT_SUSPICIOUS_WINDOW
from apikeys._expiry import MAX_LIFETIME
from apikeys._keyformat import DEFAULT_PREFIX, validate_prefix
from apikeys._ratelimit import DEFAULT_MAX_TRACKED_KEYS
from apikeys._upstream import DEFAULT_VERIFICATION_BUDGET, parse_verification_budget

DEFAULT_CLERK_API_URL = "https://api.clerk.com/v1"
# Generous for people and services, small enough that one leaked key cannot mint
# keys without bound (each a secret to find and revoke).
DEFAULT_MAX_ACTIVE_KEYS_PER_OWNER = 100

# argon2id cost for the local backend's hashes. The secrets hashed are 196-bit
# random strings, not passwords: no cost makes guessing one feasible or not, so
# the cost only buys an attacker who floods wrong secrets more CPU of ours.
# 64 KiB, one pass: about 0.1 ms per hash here (1 MiB took about 0.7-1 ms).
DEFAULT_ARGON2_TIME_COST = 1
DEFAULT_ARGON2_MEMORY_COST = 64
DEFAULT_ARGON2_PARALLELISM = 1
_UINT32_MAX = 2**32 - 1
_MAX_INTERVAL_SECONDS = MAX_LIFETIME.total_seconds()

_LOCK_OUT = (
    "it limited failures per key id, and a key id is public, so anyone who knew one"
    " could lock its holder out; use the web integrations' client_max_failures to"
    " limit each client, and max_concurrent_hashes to bound the work"
)
REMOVED_SETTINGS: dict[str, str] = {
    "max_failures_per_key": _LOCK_OUT,
    "failure_window": _LOCK_OUT,
}
"""Settings that no longer exist, with why: passing one is an error, never ignored."""


def reject_removed_settings(options: Mapping[str, object], where: str = "apikeys") -> None:
    """Refuse any of :data:`REMOVED_SETTINGS` (or another unknown option) in ``options``.

    Raises:
        ConfigurationError: A removed setting was given, saying why it went.
        TypeError: Another unexpected option was given.
    """
    for name in options:
        reason = REMOVED_SETTINGS.get(name.lower().removeprefix("apikeys_"))
        if reason is not None:
            raise ConfigurationError(f"the setting {name} was removed: {reason}")
    if options:
        raise TypeError(f"{where} got unexpected options: {', '.join(sorted(options))}")


def check_redis_url(value: SecretStr | None) -> SecretStr | None:
    """Refuse anything but a Redis URL, without quoting it (it may hold a password)."""
    if value is not None and not value.get_secret_value().startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value


class Settings(BaseSettings):
    """Every setting apikeys reads. Environment variables are ``APIKEYS_<NAME>``
    unless noted; keyword arguments to the factories win over the environment.
    """

    model_config = SettingsConfigDict(
        env_prefix="APIKEYS_", extra="forbid", frozen=True, populate_by_name=True
    )

    backend: str | None = Field(
        default=None, description="Backend URL: sqlite:///…, postgresql+psycopg://…, clerk://"
    )
    key_prefix: str = Field(default=DEFAULT_PREFIX, description="Prefix of locally issued keys")
    cache_ttl: float = Field(
        default=DEFAULT_CACHE_TTL,
        ge=0,
        allow_inf_nan=False,  # the staleness of a revocation must stay bounded
        description="Seconds a verification is cached; 0 disables",
    )
    cache_max_entries: int = Field(default=DEFAULT_CACHE_MAX_ENTRIES, ge=1)
    last_used_interval: float = Field(
        default=60.0,
        ge=0,
        le=_MAX_INTERVAL_SECONDS,  # a timedelta of it must exist
        allow_inf_nan=False,
        description="Seconds between two background writes of last_used_at; 0 writes during validation",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis shared by every process (redis://host:6379/0): revocations reach"
        " every process at once, and limits count across them; the URL may hold a password",
    )
    create_schema: bool = Field(default=True, description="Create the table on first use")
    max_active_keys_per_owner: int = Field(
        default=DEFAULT_MAX_ACTIVE_KEYS_PER_OWNER,
        ge=0,
        description="Active (neither revoked nor expired) keys one owner may hold; a create"
        " past it raises KeyLimitReachedError; 0 disables",
    )
    # argon2 takes its parameters as 32-bit unsigned integers.
    argon2_time_cost: int = Field(default=DEFAULT_ARGON2_TIME_COST, ge=1, le=_UINT32_MAX)
    argon2_memory_cost: int = Field(
        default=DEFAULT_ARGON2_MEMORY_COST, ge=8, le=_UINT32_MAX, description="KiB"
    )
    argon2_parallelism: int = Field(default=DEFAULT_ARGON2_PARALLELISM, ge=1, le=_UINT32_MAX)
    timeout: float = Field(
        default=5.0,
        gt=0,
        allow_inf_nan=False,  # an endless wait would never fail closed
        description="Seconds for one backend call",
    )
    max_concurrent_hashes: int | None = Field(
        default=None,
        ge=1,
        description="argon2 hashes running at once, first come first served; default one per CPU",
    )
    max_tracked_key_ids: int = Field(
        default=DEFAULT_MAX_TRACKED_KEYS,
        ge=1,
        description="Key ids the burst detector remembers at most",
    )
    suspicious_failures: int = Field(
        default=DEFAULT_SUSPICIOUS_FAILURES,
        ge=0,
        description="Failures against one key id per suspicious_window reported as suspicious",
    )
    suspicious_window: float = Field(default=DEFAULT_SUSPICIOUS_WINDOW, gt=0, allow_inf_nan=False)
    verification_budget: str = Field(
        default=DEFAULT_VERIFICATION_BUDGET,
        description="Clerk: verifications of secrets not seen succeed in the last day, per"
        " window (20/10s; production instances: up to 1000/10s less what else uses Clerk);"
        " past it such a secret gets 503; 0 turns the budget off",
    )
    clerk_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("clerk_secret_key", "CLERK_SECRET_KEY"),
        description="Clerk instance secret key (sk_…)",
    )
    clerk_api_url: str = Field(
        default=DEFAULT_CLERK_API_URL,
        validation_alias=AliasChoices("clerk_api_url", "CLERK_API_URL"),
    )
    clerk_api_version: str | None = Field(
        default=None, validation_alias=AliasChoices("clerk_api_version", "CLERK_API_VERSION")
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_removed(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            reject_removed_settings({n: v for n, v in data.items() if n in REMOVED_SETTINGS})
        return data

    _check_redis_url = field_validator("redis_url")(check_redis_url)

    @field_validator("verification_budget")
    @classmethod
    def _check_verification_budget(cls, value: str) -> str:
        parse_verification_budget(value)
        return value

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return validate_prefix(value)


def load_settings(**options: Any) -> Settings:
    """Build :class:`Settings` from ``options`` and the environment.

    Raises:
        ConfigurationError: An option is unknown or a value is invalid.
    """
    reject_removed_settings(
        {name: value for name, value in options.items() if name.lower() in REMOVED_SETTINGS}
    )
    for name in REMOVED_SETTINGS:
        variable = f"APIKEYS_{name.upper()}"
        if variable in os.environ:
            reject_removed_settings({variable: os.environ[variable]})
    try:
        return Settings(**options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"invalid apikeys settings: {problems}") from None
    except InvalidInputError as exc:
        raise ConfigurationError(f"invalid apikeys settings: {exc.message}") from None


__all__ = ["Settings", "check_redis_url", "load_settings"]
