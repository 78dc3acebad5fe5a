"""The exception tree of apikeys.

Every error the library raises derives from :class:`APIKeysError` and carries
the HTTP status an integration should answer with (``status_code``), a stable
machine-readable ``code``, and the key id where one is known -- never a secret::

    APIKeysError (500)
    ├── AuthenticationError (401/403)        request-time key failures
    │   ├── MissingKeyError (401)            no key was sent
    │   ├── InvalidKeyError (403)            malformed, unknown or wrong key
    │   │   ├── ExpiredKeyError (403)        right secret, past its expiry
    │   │   └── RevokedKeyError (403)        right secret, revoked
    │   ├── InsufficientScopeError (403)     valid key lacking a required scope
    │   ├── InsecureTransportError (403)     a key sent over plain HTTP with require_https on
    │   ├── ForeignUserError (403)           a management call named another user
    │   ├── LifetimeEscalationError (403)    a new key would outlive the key creating it
    │   └── LimitEscalationError (403)       a new key's limits would be looser than its creator's
    ├── KeyNotFoundError (404)               no key with that id
    ├── KeyLimitReachedError (409)           the owner holds the most active keys allowed
    ├── InvalidInputError (422)              bad arguments; nothing was written
    │   └── InvalidRequestError (422)        a management request, with every field error
    ├── RateLimitedError (429)               too many attempts; see retry_after
    │   └── QuotaExceededError (429)         a key's quota is spent; see refills_at
    ├── ConfigurationError (500)             the library is set up wrongly
    │   └── MissingDependencyError (500)     an optional extra is not installed
    └── BackendUnavailableError (503)        the key store cannot answer
        ├── RevocationIncompleteError (503)  a revocation left keys it should end active
        └── VerificationBudgetSpentError (503)  too many unknown keys to ask Clerk about
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apikeys._meter import Allowance


class APIKeysError(Exception):
    """Root of every error raised by apikeys.

    Attributes:
        status_code: The HTTP status an integration answers with.
        code: A stable, machine-readable error code.
        key_id: The public id of the key concerned, when known.
    """

    status_code: int = 500
    code: str = "apikeys_error"
    default_message: str = "API key error"

    def __init__(self, message: str | None = None, *, key_id: str | None = None) -> None:
        self.message = message or self.default_message
        self.key_id = key_id
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, key_id={self.key_id!r})"


class AuthenticationError(APIKeysError):
    """A request's API key was missing, refused or lacked a scope."""

    status_code = 403
    code = "authentication_failed"
    default_message = "API key authentication failed"


class MissingKeyError(AuthenticationError):
    """No API key was sent with the request."""

    status_code = 401
    code = "missing_api_key"
    default_message = "An API key is required"


class InvalidKeyError(AuthenticationError):
    """The key is malformed, unknown, or its secret is wrong.

    These three cases share one class, code and message on purpose: a caller
    must not learn whether a key id exists without holding its secret.
    """

    status_code = 403
    code = "invalid_api_key"
    default_message = "Invalid API key"


class ExpiredKeyError(InvalidKeyError):
    """The secret is right but the key has expired."""

    code = "expired_api_key"
    default_message = "API key has expired"


class RevokedKeyError(InvalidKeyError):
    """The secret is right but the key was revoked."""

    code = "revoked_api_key"
    default_message = "API key has been revoked"


class InsufficientScopeError(AuthenticationError):
    """A valid key lacks one or more of the required scopes.

    Attributes:
        missing_scopes: The required scopes the key does not hold.
    """

    status_code = 403
    code = "insufficient_scope"
    default_message = "API key lacks a required scope"

    def __init__(
        self,
        message: str | None = None,
        *,
        key_id: str | None = None,
        missing_scopes: Sequence[str] = (),
    ) -> None:
        self.missing_scopes: tuple[str, ...] = tuple(missing_scopes)
        if message is None and self.missing_scopes:
            message = f"API key lacks required scope(s): {' '.join(self.missing_scopes)}"
        super().__init__(message, key_id=key_id)


class KeyNotFoundError(APIKeysError):
    """No API key exists with the given id."""

    status_code = 404
    code = "api_key_not_found"
    default_message = "API key not found"


class KeyLimitReachedError(APIKeysError):
    """The owner already holds as many active keys as allowed; nothing was written.

    Attributes:
        limit: The most active keys one owner may hold (``max_active_keys_per_owner``),
            when known.
    """

    status_code = 409
    code = "key_limit_reached"
    default_message = "The owner holds the most active API keys allowed"

    def __init__(
        self, message: str | None = None, *, key_id: str | None = None, limit: int | None = None
    ) -> None:
        self.limit = limit
        if message is None and limit is not None:
            message = (
                f"this owner already holds {limit} active API keys, the most allowed: revoke"
                " keys no longer used, or raise max_active_keys_per_owner"
                " (APIKEYS_MAX_ACTIVE_KEYS_PER_OWNER; 0 means no limit)"
            )
        super().__init__(message, key_id=key_id)


class InvalidInputError(APIKeysError, ValueError):
    """An argument was rejected before anything was written.

    Attributes:
        field: The name of the offending argument, when there is one.
    """

    status_code = 422
    code = "invalid_input"
    default_message = "Invalid input"

    def __init__(
        self, message: str | None = None, *, field: str | None = None, key_id: str | None = None
    ) -> None:
        self.field = field
        super().__init__(message, key_id=key_id)


class RateLimitedError(APIKeysError):
    """Too many attempts; retry after ``retry_after`` seconds.

    Attributes:
        retry_after: Seconds until a retry may pass, when known.
        usage: When a key's own limits refused the call: what each of them had
            left at the refusal, as the refused call charged nothing (so the
            ``RateLimit`` header fields of the 429 can say it). ``None`` for
            other refusals (too many failures from one client, too many keys
            created), which are not counted against a key.
    """

    status_code = 429
    code = "rate_limited"
    default_message = "Too many requests"

    def __init__(
        self,
        message: str | None = None,
        *,
        key_id: str | None = None,
        retry_after: float | None = None,
        usage: Allowance | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.usage = usage
        super().__init__(message, key_id=key_id)


class QuotaExceededError(RateLimitedError):
    """The key's quota is spent: it refills at ``refills_at``, or never.

    Attributes:
        refills_at: When the quota's next period starts; ``None`` for a one-off
            balance, which never refills.
        retry_after: Seconds until ``refills_at``; ``None`` when it never refills.
    """

    code = "quota_exceeded"
    default_message = "API key quota exceeded"

    def __init__(
        self,
        message: str | None = None,
        *,
        key_id: str | None = None,
        refills_at: datetime | None = None,
        retry_after: float | None = None,
        usage: Allowance | None = None,
    ) -> None:
        self.refills_at = refills_at
        super().__init__(message, key_id=key_id, retry_after=retry_after, usage=usage)


class ConfigurationError(APIKeysError):
    """apikeys is configured wrongly (a missing setting, an unknown backend)."""

    status_code = 500
    code = "configuration_error"
    default_message = "apikeys is not configured correctly"


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    code = "missing_dependency"

    def __init__(self, package: str, extra: str, hint: str = "") -> None:
        self.package = package
        self.extra = extra
        self.hint = hint
        message = f"{package} is required for this feature: pip install 'apikeys[{extra}]'"
        super().__init__(f"{message}; {hint}" if hint else message)

    def __reduce__(self) -> tuple[type[MissingDependencyError], tuple[str, str, str]]:
        # Exceptions unpickle as cls(*self.args), i.e. cls(message), which this
        # __init__ does not accept; rebuild from what it does.
        return type(self), (self.package, self.extra, self.hint)


class BackendUnavailableError(APIKeysError):
    """The key store could not answer; requests must be refused (fail closed).

    Attributes:
        retry_after: Seconds after which a retry may succeed, when known.
    """

    status_code = 503
    code = "backend_unavailable"
    default_message = "API key backend is unavailable"

    def __init__(
        self,
        message: str | None = None,
        *,
        key_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, key_id=key_id)


class RevocationIncompleteError(BackendUnavailableError):
    """A key was revoked or deleted, but keys it created are still active.

    Revoking a key revokes every key it created, and theirs in turn. When the
    store could not end them all, this is raised rather than a partial success:
    retry the revocation (it is idempotent) until it succeeds.

    Attributes:
        still_active: Ids of the keys known to be still active (empty when they
            could not even be listed).
    """

    code = "revocation_incomplete"
    default_message = "The revocation is incomplete: keys created by the key are still active"

    def __init__(
        self,
        message: str | None = None,
        *,
        key_id: str | None = None,
        still_active: Sequence[str] = (),
        retry_after: float | None = 1,
    ) -> None:
        self.still_active: tuple[str, ...] = tuple(still_active)
        if message is None and key_id is not None:
            message = (
                f"key {key_id} is revoked, but keys it created are still active:"
                f" {', '.join(self.still_active) or 'they could not be listed'};"
                " retry the revocation"
            )
        super().__init__(message, key_id=key_id, retry_after=retry_after)


class VerificationBudgetSpentError(BackendUnavailableError):
    """Too many secrets never seen to verify reached a remote key store (Clerk) lately (503).

    Each verification there is a call on a rate limit the whole application
    shares (and, past a free tier, billed), so secrets this deployment has not
    seen succeed recently are verified within a budget; keys seen succeed
    recently are never held back by it. The backend is protecting itself, not
    refusing the key: retry after ``retry_after`` seconds.
    """

    code = "verification_budget_spent"
    default_message = (
        "Too many unknown API keys were presented lately: verification is paused, retry later"
    )


class InsecureTransportError(AuthenticationError):
    """A key was sent over plain HTTP while ``require_https`` is on (403).

    The key is refused without being validated; its holder should treat it
    as exposed and rotate it.
    """

    status_code = 403
    code = "https_required"
    default_message = "API keys must be sent over HTTPS"


class ForeignUserError(AuthenticationError):
    """A management call named a ``userId`` other than the caller's own (403)."""

    code = "forbidden_user"
    default_message = "An API key can only manage its own user's keys"


class LifetimeEscalationError(AuthenticationError):
    """A new key would expire after the calling key (403)."""

    code = "expiration_beyond_caller"
    default_message = "A new key cannot expire after the API key that creates it"


class LimitEscalationError(AuthenticationError):
    """A new key's rate limit or quota would be looser than the calling key's (403)."""

    code = "limits_beyond_caller"
    default_message = "A new key's rate limit and quota must be no looser than the calling key's"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One rejected field of a request, as JSON names it."""

    field: str
    message: str


class InvalidRequestError(InvalidInputError):
    """A management request was rejected; carries every field error at once (422)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        message = "; ".join(f"{error.field}: {error.message}" for error in self.errors)
        super().__init__(message or None, field=self.errors[0].field if self.errors else None)
