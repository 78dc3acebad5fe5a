"""The exception tree: statuses, codes, hierarchy, and no secret in any message."""

from __future__ import annotations

import pickle
import traceback
from typing import TypeVar

import pytest

import apikeys
from apikeys import (
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
    generate_key,
    parse_key,
)

T = TypeVar("T")


def pickled_copy(value: T) -> T:
    """Round-trip ``value`` through pickle (our own bytes, so loading them is safe)."""
    copy: T = pickle.loads(pickle.dumps(value))  # noqa: S301
    return copy


# class, HTTP status, code, direct parent
TREE: list[tuple[type[APIKeysError], int, str, type[BaseException]]] = [
    (APIKeysError, 500, "apikeys_error", Exception),
    (AuthenticationError, 403, "authentication_failed", APIKeysError),
    (MissingKeyError, 401, "missing_api_key", AuthenticationError),
    (InvalidKeyError, 403, "invalid_api_key", AuthenticationError),
    (ExpiredKeyError, 403, "expired_api_key", InvalidKeyError),
    (RevokedKeyError, 403, "revoked_api_key", InvalidKeyError),
    (InsufficientScopeError, 403, "insufficient_scope", AuthenticationError),
    (InsecureTransportError, 403, "https_required", AuthenticationError),
    (ForeignUserError, 403, "forbidden_user", AuthenticationError),
    (LifetimeEscalationError, 403, "expiration_beyond_caller", AuthenticationError),
    (LimitEscalationError, 403, "limits_beyond_caller", AuthenticationError),
    (KeyNotFoundError, 404, "api_key_not_found", APIKeysError),
    (KeyLimitReachedError, 409, "key_limit_reached", APIKeysError),
    (InvalidInputError, 422, "invalid_input", APIKeysError),
    # Answers as its parent does, with every field error listed.
    (InvalidRequestError, 422, "invalid_input", InvalidInputError),
    (RateLimitedError, 429, "rate_limited", APIKeysError),
    (QuotaExceededError, 429, "quota_exceeded", RateLimitedError),
    (ConfigurationError, 500, "configuration_error", APIKeysError),
    (MissingDependencyError, 500, "missing_dependency", ConfigurationError),
    (BackendUnavailableError, 503, "backend_unavailable", APIKeysError),
    (RevocationIncompleteError, 503, "revocation_incomplete", BackendUnavailableError),
    (VerificationBudgetSpentError, 503, "verification_budget_spent", BackendUnavailableError),
]
SIMPLE = [cls for cls, *_ in TREE if cls not in (MissingDependencyError, InvalidRequestError)]


@pytest.mark.parametrize(
    ("cls", "status", "code", "parent"), TREE, ids=[c.__name__ for c, *_ in TREE]
)
def test_status_code_and_parent(
    cls: type[APIKeysError], status: int, code: str, parent: type[BaseException]
) -> None:
    assert cls.status_code == status
    assert cls.code == code
    assert cls.__bases__[0] is parent
    assert issubclass(cls, APIKeysError)


def test_the_tree_is_every_public_error() -> None:
    public = {
        obj
        for obj in vars(apikeys).values()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }
    assert public == {cls for cls, *_ in TREE}


def test_codes_are_unique() -> None:
    codes = [code for _, _, code, parent in TREE if code != getattr(parent, "code", None)]
    assert len(set(codes)) == len(codes)


def test_builtin_bases_let_callers_catch_them_idiomatically() -> None:
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(MissingDependencyError, ImportError)
    assert not issubclass(InvalidKeyError, ValueError)


def test_wrong_key_states_are_invalid_key_errors() -> None:
    # An integration that refuses InvalidKeyError refuses expired and revoked keys too.
    for cls in (ExpiredKeyError, RevokedKeyError):
        with pytest.raises(InvalidKeyError):
            raise cls()


@pytest.mark.parametrize("cls", SIMPLE, ids=lambda c: c.__name__)
def test_default_and_custom_messages_and_key_id(cls: type[APIKeysError]) -> None:
    default = cls()
    assert default.message == cls.default_message
    assert str(default) == cls.default_message
    assert default.key_id is None
    custom = cls("something specific", key_id="AbCdEf123456")
    assert str(custom) == "something specific"
    assert custom.key_id == "AbCdEf123456"
    assert repr(custom) == f"{cls.__name__}('something specific', key_id='AbCdEf123456')"


def test_an_empty_message_falls_back_to_the_default() -> None:
    assert str(InvalidKeyError("")) == "Invalid API key"


@pytest.mark.parametrize("cls", SIMPLE, ids=lambda c: c.__name__)
def test_errors_survive_pickling(cls: type[APIKeysError]) -> None:
    error = cls("why", key_id="k1")
    copy = pickled_copy(error)
    assert type(copy) is cls
    assert (copy.message, copy.key_id, str(copy)) == ("why", "k1", "why")


def test_insufficient_scope_error_lists_what_is_missing() -> None:
    error = InsufficientScopeError(key_id="k1", missing_scopes=["write:data", "admin"])
    assert error.missing_scopes == ("write:data", "admin")
    assert str(error) == "API key lacks required scope(s): write:data admin"
    assert error.key_id == "k1"
    assert InsufficientScopeError().missing_scopes == ()
    assert str(InsufficientScopeError()) == "API key lacks a required scope"
    explicit = InsufficientScopeError("nope", missing_scopes=["a"])
    assert (str(explicit), explicit.missing_scopes) == ("nope", ("a",))
    copy = pickled_copy(error)
    assert copy.missing_scopes == error.missing_scopes


def test_invalid_input_error_names_its_field() -> None:
    error = InvalidInputError("bad name", field="name", key_id="k1")
    assert (error.field, error.key_id, str(error)) == ("name", "k1", "bad name")
    assert InvalidInputError().field is None
    assert pickled_copy(error).field == "name"


@pytest.mark.parametrize("cls", [RateLimitedError, BackendUnavailableError])
def test_retry_after(cls: type[RateLimitedError | BackendUnavailableError]) -> None:
    error = cls(retry_after=2.5, key_id="k")
    assert error.retry_after == 2.5
    assert cls().retry_after is None
    assert pickled_copy(error).retry_after == 2.5


def test_quota_exceeded_error_is_a_rate_limit_that_says_when_it_refills() -> None:
    from datetime import UTC, datetime

    from apikeys._errors import QuotaExceededError

    assert issubclass(QuotaExceededError, RateLimitedError)  # integrations answer 429 alike
    assert (QuotaExceededError.status_code, QuotaExceededError.code) == (429, "quota_exceeded")
    refills_at = datetime(2030, 2, 1, tzinfo=UTC)
    error = QuotaExceededError(refills_at=refills_at, retry_after=60.0, key_id="k")
    assert (error.refills_at, error.retry_after, str(error)) == (
        refills_at,
        60.0,
        "API key quota exceeded",
    )
    copy = pickled_copy(error)
    assert (type(copy), copy.refills_at, copy.retry_after) == (QuotaExceededError, refills_at, 60.0)
    never = QuotaExceededError()  # a one-off balance: spent, it never refills
    assert (never.refills_at, never.retry_after) == (None, None)


def test_key_limit_reached_error_names_the_limit_and_how_to_raise_it() -> None:
    error = KeyLimitReachedError(limit=100)
    assert error.limit == 100
    assert "100 active API keys" in str(error)
    assert "max_active_keys_per_owner" in str(error)
    assert "APIKEYS_MAX_ACTIVE_KEYS_PER_OWNER" in str(error)
    assert pickled_copy(error).limit == 100


def test_revocation_incomplete_error_names_the_keys_still_active() -> None:
    error = RevocationIncompleteError(key_id="parent", still_active=["c1", "c2"])
    assert error.still_active == ("c1", "c2")
    assert "parent" in str(error) and "c1, c2" in str(error)
    assert error.retry_after == 1
    assert isinstance(error, BackendUnavailableError)
    assert pickled_copy(error).still_active == ("c1", "c2")
    unlisted = RevocationIncompleteError(key_id="parent")
    assert "could not be listed" in str(unlisted)


def test_missing_dependency_error_names_the_extra_to_install() -> None:
    error = MissingDependencyError("httpx", "clerk")
    assert (error.package, error.extra) == ("httpx", "clerk")
    assert str(error) == "httpx is required for this feature: pip install 'apikeys[clerk]'"
    assert error.status_code == 500
    copy = pickled_copy(error)
    assert (type(copy), copy.package, copy.extra, str(copy)) == (
        MissingDependencyError,
        "httpx",
        "clerk",
        str(error),
    )


# --- secrets never leak into errors -----------------------------------------------------------


def rendered(error: BaseException) -> str:
    """Everything a log line or error page could show about an exception."""
    return "\n".join(
        [str(error), repr(error), *map(str, error.args), *traceback.format_exception(error)]
    )


def test_refusing_a_key_never_echoes_it() -> None:
    key = generate_key().key
    # A one-character typo: the remaining 55 characters are still almost the whole secret.
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    for presented in (typo, key + "x", " " + key, key.replace("apk_", "xyz_")):
        with pytest.raises(InvalidKeyError) as caught:
            parse_key(presented)
        text = rendered(caught.value)
        assert key[5:-6] not in text
        assert presented not in text


def test_validation_errors_of_a_real_manager_never_echo_the_secret() -> None:
    pytest.importorskip("sqlalchemy")
    from datetime import timedelta

    manager = apikeys.create_key_manager("sqlite:///:memory:", cache_ttl=0)
    try:
        new = manager.create_api_key("user_1", "ci", ["read:data"], timedelta(days=1))
        wrong = generate_key(id=new.id).key  # right id, wrong secret
        failures: list[apikeys.AuthenticationError] = []
        for presented, required in ((wrong, ()), (new.secret, ("admin",))):
            with pytest.raises(apikeys.AuthenticationError) as caught:
                manager.validate_api_key(presented, required_scopes=required)
            failures.append(caught.value)
        manager.revoke_api_key(new.id, reason="test")
        with pytest.raises(RevokedKeyError) as revoked:
            manager.validate_api_key(new.secret)
        failures.append(revoked.value)
        for failure in failures:
            text = rendered(failure)
            assert new.secret not in text
            assert new.secret[5:-6] not in text
            assert wrong not in text
        assert failures[1].key_id == new.id  # the key id is fine to report
    finally:
        manager.close()
