"""apikeys: issue, list, revoke, rotate and validate API keys, whatever stores them.

Example:
    >>> import apikeys
    >>> manager = apikeys.create_key_manager("sqlite:///:memory:")
    >>> new = manager.create_api_key("user_123", "CI pipeline", ["read:data"], "2099-12-31")
    >>> manager.validate_api_key(new.secret, required_scopes=["read:data"]).user_id
    'user_123'
"""

from __future__ import annotations

from apikeys._arguments import KEEP
from apikeys._cache import VerificationCache
from apikeys._config import Settings
from apikeys._default import (
    acreate_api_key,
    avalidate_api_key,
    configure,
    create_api_key,
    get_async_key_manager,
    get_key_manager,
    validate_api_key,
)
from apikeys._errors import (
    APIKeysError,
    AuthenticationError,
    BackendUnavailableError,
    ConfigurationError,
    ExpiredKeyError,
    ForeignUserError,
    InsecureTransportError,
    InsufficientScopeError,
    InvalidInputError,
    InvalidKeyError,
    InvalidRequestError,
    KeyLimitReachedError,
    KeyNotFoundError,
    LifetimeEscalationError,
    LimitEscalationError,
    MissingDependencyError,
    MissingKeyError,
    QuotaExceededError,
    RateLimitedError,
    RevocationIncompleteError,
    RevokedKeyError,
    VerificationBudgetSpentError,
)
from apikeys._events import KeyEvent, add_event_listener, remove_event_listener
from apikeys._expiry import Expiration, parse_expiration
from apikeys._factory import create_async_key_manager, create_key_manager
from apikeys._keyformat import KEY_PATTERN, generate_key, key_pattern, parse_key
from apikeys._keylimits import Quota, RateLimit
from apikeys._meter import Allowance, Balance
from apikeys._models import APIKey, APIKeyPage, NewAPIKey, VerifiedKey
from apikeys._protocols import AsyncKeyManager, KeyManager
from apikeys._scopes import MANAGEMENT_SCOPE, missing_scopes, normalize_scopes, scope_covers

__version__ = "0.1.0"

__all__ = [
    "KEEP",
    "KEY_PATTERN",
    "MANAGEMENT_SCOPE",
    "APIKey",
    "APIKeyPage",
    "APIKeysError",
    "Allowance",
    "AsyncKeyManager",
    "AuthenticationError",
    "BackendUnavailableError",
    "Balance",
    "ConfigurationError",
    "Expiration",
    "ExpiredKeyError",
    "ForeignUserError",
    "InsecureTransportError",
    "InsufficientScopeError",
    "InvalidInputError",
    "InvalidKeyError",
    "InvalidRequestError",
    "KeyEvent",
    "KeyLimitReachedError",
    "KeyManager",
    "KeyNotFoundError",
    "LifetimeEscalationError",
    "LimitEscalationError",
    "MissingDependencyError",
    "MissingKeyError",
    "NewAPIKey",
    "Quota",
    "QuotaExceededError",
    "RateLimit",
    "RateLimitedError",
    "RevocationIncompleteError",
    "RevokedKeyError",
    "Settings",
    "VerificationBudgetSpentError",
    "VerificationCache",
    "VerifiedKey",
    "__version__",
    "acreate_api_key",
    "add_event_listener",
    "avalidate_api_key",
    "configure",
    "create_api_key",
    "create_async_key_manager",
    "create_key_manager",
    "generate_key",
    "get_async_key_manager",
    "get_key_manager",
    "key_pattern",
    "missing_scopes",
    "normalize_scopes",
    "parse_expiration",
    "parse_key",
    "remove_event_listener",
    "scope_covers",
    "validate_api_key",
]
