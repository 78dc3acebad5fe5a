"""Behaviour every backend must show, sync and async alike (see conftest.py)."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import apikeys
from apikeys import (
    APIKey,
    APIKeyPage,
    ExpiredKeyError,
    InsufficientScopeError,
    InvalidInputError,
    InvalidKeyError,
    KeyNotFoundError,
    NewAPIKey,
    RevokedKeyError,
    VerifiedKey,
)
from apikeys._expiry import is_expired
from tests.contract.backends import BackendCase, MovableClock, SyncFacade
from tests.eventually import eventually

GARBAGE = [
    "",
    " ",
    "Bearer",
    "null",
    "x" * 10_000,
    "apk_",
    "ak_",
    "ünïcödé",
    "\x00\x01",
    "apk_1" + "A" * 51,
]


def _soon(seconds: float = 1.0) -> timedelta:
    return timedelta(seconds=seconds)


# --- create ------------------------------------------------------------------------


def test_create_returns_the_key_and_its_secret_once(manager: SyncFacade, user_id: str) -> None:
    new = manager.create_api_key(user_id, "CI pipeline", ["read:data"], metadata={"team": "ops"})
    assert isinstance(new, NewAPIKey)
    assert new.user_id == user_id
    assert new.name == "CI pipeline"
    assert new.scopes == ("read:data",)
    assert new.metadata == {"team": "ops"}
    assert new.expires_at is None and new.revoked_at is None
    assert abs((datetime.now(UTC) - new.created_at).total_seconds()) < 60
    assert new.secret
    for shown in (repr(new), str(new), new.model_dump_json(), repr(new.model_dump())):
        assert new.secret not in shown
    stored = manager.get_api_key(new.id)
    assert isinstance(stored, APIKey)
    assert not hasattr(stored, "secret")
    assert stored.id == new.id and stored.name == new.name and stored.scopes == new.scopes


def test_each_key_is_unique(manager: SyncFacade, user_id: str) -> None:
    keys = [manager.create_api_key(user_id, f"key {i}") for i in range(5)]
    assert len({k.id for k in keys}) == 5
    assert len({k.secret for k in keys}) == 5


@pytest.mark.parametrize(
    ("expiration", "expected"),
    [
        ("2099-12-31", datetime(2100, 1, 1, tzinfo=UTC)),
        (date(2099, 12, 31), datetime(2100, 1, 1, tzinfo=UTC)),
        (
            datetime(2099, 6, 1, 12, 30, tzinfo=UTC),
            datetime(2099, 6, 1, 12, 30, tzinfo=UTC),
        ),
        ("2099-06-01T12:30:00Z", datetime(2099, 6, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_expiration_forms(
    manager: SyncFacade, user_id: str, expiration: object, expected: datetime
) -> None:
    new = manager.create_api_key(user_id, "expiring", expiration=expiration)
    assert new.expires_at == expected
    assert manager.get_api_key(new.id).expires_at == expected
    assert manager.validate_api_key(new.secret).expires_at == expected


def test_expiration_as_timedelta(manager: SyncFacade, user_id: str) -> None:
    before = datetime.now(UTC)
    new = manager.create_api_key(user_id, "a day", expiration=timedelta(days=1))
    assert new.expires_at is not None
    assert before + timedelta(days=1) - timedelta(seconds=5) <= new.expires_at
    assert new.expires_at <= datetime.now(UTC) + timedelta(days=1, seconds=5)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 300}, "name"),
        ({"user_id": ""}, "user_id"),
        ({"scopes": ["read data"]}, "scopes"),
        ({"scopes": ["*"]}, "scopes"),
        ({"scopes": [""]}, "scopes"),
        ({"expiration": "2001-01-01"}, "expiration"),
        ({"expiration": "next tuesday"}, "expiration"),
        ({"expiration": timedelta(seconds=-5)}, "expiration"),
        ({"expiration": 12345}, "expiration"),
        ({"metadata": {"x": object()}}, "metadata"),
        ({"metadata": {"big": "x" * 10_000}}, "metadata"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    manager: SyncFacade, user_id: str, kwargs: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {"user_id": user_id, "name": "fine", **kwargs}
    with pytest.raises(InvalidInputError) as caught:
        manager.create_api_key(**arguments)
    assert caught.value.field == field
    assert caught.value.status_code == 422
    assert manager.list_api_keys(user_id, include_invalid=True).total == 0


# --- validate ----------------------------------------------------------------------


def test_validate_returns_owner_scopes_and_metadata(manager: SyncFacade, user_id: str) -> None:
    new = manager.create_api_key(
        user_id, "reader", ["read:data", "write:data"], "2099-12-31", metadata={"plan": "pro"}
    )
    verified = manager.validate_api_key(new.secret)
    assert isinstance(verified, VerifiedKey)
    assert verified.id == new.id
    assert verified.user_id == user_id
    assert verified.name == "reader"
    assert verified.scopes == ("read:data", "write:data")
    assert verified.metadata == {"plan": "pro"}
    assert verified.expires_at == new.expires_at
    # Repeated validation (served from the cache where there is one) agrees.
    assert manager.validate_api_key(new.secret) == verified


def test_required_scopes(manager: SyncFacade, user_id: str) -> None:
    new = manager.create_api_key(user_id, "scoped", ["read:data", "billing:*"])
    assert manager.validate_api_key(new.secret, required_scopes=["read:data"]).id == new.id
    assert manager.validate_api_key(new.secret, required_scopes=["billing:invoices:read"])
    with pytest.raises(InsufficientScopeError) as caught:
        manager.validate_api_key(new.secret, required_scopes=["read:data", "write:data", "admin"])
    assert caught.value.missing_scopes == ("write:data", "admin")
    assert caught.value.status_code == 403
    assert caught.value.key_id == new.id
    assert new.secret not in str(caught.value)
    # A failed scope check does not poison later checks (the key is still valid).
    assert manager.validate_api_key(new.secret).id == new.id
    with pytest.raises(InvalidInputError):
        manager.validate_api_key(new.secret, required_scopes=["billing:*"])


def test_wrong_unknown_and_garbage_keys_are_indistinguishable(
    manager: SyncFacade, backend: BackendCase, user_id: str
) -> None:
    new = manager.create_api_key(user_id, "real")
    manager.validate_api_key(new.secret)  # warm any cache
    refused = []
    for presented in [
        backend.wrong_secret_for(new.secret),
        backend.unknown_key_like(new.secret),
        new.secret[:-1],
        new.secret + "x",
        *GARBAGE,
    ]:
        with pytest.raises(InvalidKeyError) as caught:
            manager.validate_api_key(presented)
        error = caught.value
        assert type(error) is InvalidKeyError
        refused.append((error.status_code, error.code, error.message, error.key_id))
        assert presented not in repr(error) or not presented.strip()
    assert len(set(refused)) == 1, refused
    assert refused[0][:2] == (403, "invalid_api_key")


@pytest.mark.parametrize("value", [None, 42, b"bytes", ["list"]])
def test_non_string_keys_are_invalid(manager: SyncFacade, value: object) -> None:
    with pytest.raises(InvalidKeyError):
        manager.validate_api_key(value)


def test_expired_key_is_refused_even_from_cache(
    manager: SyncFacade, user_id: str, clock: MovableClock
) -> None:
    new = manager.create_api_key(user_id, "short-lived", expiration=_soon(1.5))
    assert manager.validate_api_key(new.secret).id == new.id
    cache = getattr(manager.manager, "cache", None)  # the built-in backends' cache
    if cache is not None:
        # A manager with a revocation channel (PostgreSQL) caches nothing until it listens.
        eventually(lambda: not cache.suspended)
        manager.validate_api_key(new.secret)
        assert cache.lookup(new.secret) is not None
    clock.advance(1.6)  # the cache entry's own age (monotonic) hardly moves
    with pytest.raises(ExpiredKeyError) as caught:
        manager.validate_api_key(new.secret)
    assert caught.value.status_code == 403
    assert caught.value.key_id == new.id
    assert is_expired(manager.get_api_key(new.id).expires_at, clock())


# --- revoke and delete -------------------------------------------------------------


def test_revoke_takes_effect_at_once(manager: SyncFacade, user_id: str) -> None:
    new = manager.create_api_key(user_id, "to revoke")
    manager.validate_api_key(new.secret)  # now cached where there is a cache
    revoked = manager.revoke_api_key(new.id, reason="leaked in a log")
    assert revoked.revoked and revoked.revoked_at is not None
    assert revoked.revocation_reason == "leaked in a log"
    with pytest.raises(RevokedKeyError) as caught:
        manager.validate_api_key(new.secret)
    assert caught.value.status_code == 403
    # Idempotent: revoking again keeps the first revocation.
    again = manager.revoke_api_key(new.id, reason="other")
    assert again.revoked_at == revoked.revoked_at
    assert again.revocation_reason == "leaked in a log"


def test_wrong_secret_does_not_learn_revocation(
    manager: SyncFacade, backend: BackendCase, user_id: str
) -> None:
    new = manager.create_api_key(user_id, "revoked")
    manager.revoke_api_key(new.id)
    with pytest.raises(InvalidKeyError) as caught:
        manager.validate_api_key(backend.wrong_secret_for(new.secret))
    assert type(caught.value) is InvalidKeyError


def test_delete(manager: SyncFacade, user_id: str) -> None:
    new = manager.create_api_key(user_id, "to delete")
    manager.validate_api_key(new.secret)
    assert manager.delete_api_key(new.id) is None
    with pytest.raises(KeyNotFoundError) as caught:
        manager.get_api_key(new.id)
    assert caught.value.status_code == 404
    with pytest.raises(InvalidKeyError):
        manager.validate_api_key(new.secret)
    with pytest.raises(KeyNotFoundError):
        manager.delete_api_key(new.id)
    assert manager.list_api_keys(user_id, include_invalid=True).total == 0


@pytest.mark.parametrize("operation", ["get", "revoke", "delete", "rotate"])
def test_unknown_ids_are_not_found(manager: SyncFacade, operation: str) -> None:
    call: dict[str, Callable[[str], object]] = {
        "get": manager.get_api_key,
        "revoke": manager.revoke_api_key,
        "delete": manager.delete_api_key,
        "rotate": manager.rotate_api_key,
    }
    with pytest.raises(KeyNotFoundError):
        call[operation]("AAAAAAAAAAAA")


@pytest.mark.parametrize("bad_id", ["", "x" * 500, "a\nb"])
def test_malformed_ids_are_bad_input(manager: SyncFacade, bad_id: str) -> None:
    with pytest.raises(InvalidInputError):
        manager.get_api_key(bad_id)


# --- list --------------------------------------------------------------------------


def test_list_shows_only_the_owners_keys_newest_first(
    manager: SyncFacade, backend: BackendCase, user_id: str
) -> None:
    mine = [manager.create_api_key(user_id, f"mine {i}") for i in range(3)]
    manager.create_api_key(backend.new_user_id(), "not mine")
    page = manager.list_api_keys(user_id)
    assert isinstance(page, APIKeyPage)
    assert page.total == 3
    assert [k.id for k in page.items] == [k.id for k in reversed(mine)]
    assert all(k.user_id == user_id for k in page.items)
    assert all(not hasattr(k, "secret") for k in page.items)
    dumped = page.model_dump_json()
    assert all(k.secret not in dumped for k in mine)


def test_list_paginates(manager: SyncFacade, user_id: str) -> None:
    created = [manager.create_api_key(user_id, f"key {i}").id for i in range(5)]
    first = manager.list_api_keys(user_id, limit=2)
    second = manager.list_api_keys(user_id, limit=2, offset=2)
    last = manager.list_api_keys(user_id, limit=2, offset=4)
    seen = [k.id for page in (first, second, last) for k in page.items]
    assert seen == list(reversed(created))
    assert (first.total, first.has_more, last.has_more) == (5, True, False)
    with pytest.raises(InvalidInputError):
        manager.list_api_keys(user_id, limit=0)
    with pytest.raises(InvalidInputError):
        manager.list_api_keys(user_id, limit=101)
    with pytest.raises(InvalidInputError):
        manager.list_api_keys(user_id, offset=-1)


def test_list_hides_revoked_and_expired_unless_asked(
    manager: SyncFacade, user_id: str, clock: MovableClock
) -> None:
    active = manager.create_api_key(user_id, "active")
    revoked = manager.create_api_key(user_id, "revoked")
    manager.revoke_api_key(revoked.id)
    expiring = manager.create_api_key(user_id, "expiring", expiration=_soon(1))
    clock.advance(1.1)
    assert [k.id for k in manager.list_api_keys(user_id).items] == [active.id]
    everything = manager.list_api_keys(user_id, include_invalid=True)
    assert {k.id for k in everything.items} == {active.id, revoked.id, expiring.id}
    # APIKey.expired reads the real time; the managers' time is the test's clock.
    states = {k.id: (k.revoked, is_expired(k.expires_at, clock())) for k in everything.items}
    assert states[revoked.id] == (True, False)
    assert states[expiring.id] == (False, True)


# --- rotate ------------------------------------------------------------------------


def test_rotate_replaces_the_key_now(manager: SyncFacade, user_id: str) -> None:
    old = manager.create_api_key(
        user_id, "rotating", ["read:data"], "2099-12-31", metadata={"env": "prod"}
    )
    manager.validate_api_key(old.secret)
    new = manager.rotate_api_key(old.id)
    assert new.id != old.id and new.secret != old.secret
    assert (new.user_id, new.name, new.scopes, new.metadata) == (
        user_id,
        "rotating",
        ("read:data",),
        {"env": "prod"},
    )
    assert new.expires_at == old.expires_at
    assert manager.validate_api_key(new.secret).id == new.id
    with pytest.raises(InvalidKeyError):
        manager.validate_api_key(old.secret)


@pytest.mark.capability("rotation_grace")
def test_rotate_with_grace_keeps_the_old_key_briefly(manager: SyncFacade, user_id: str) -> None:
    old = manager.create_api_key(user_id, "graceful")
    new = manager.rotate_api_key(old.id, grace=timedelta(hours=1))
    assert manager.validate_api_key(old.secret).id == old.id
    assert manager.validate_api_key(new.secret).id == new.id
    old_now = manager.get_api_key(old.id)
    assert old_now.expires_at is not None
    assert old_now.expires_at <= datetime.now(UTC) + timedelta(hours=1, seconds=5)


@pytest.mark.capability("rotation_grace")
def test_grace_never_extends_the_old_keys_life(manager: SyncFacade, user_id: str) -> None:
    old = manager.create_api_key(user_id, "short", expiration=timedelta(minutes=5))
    manager.rotate_api_key(old.id, grace=timedelta(days=7))
    old_now = manager.get_api_key(old.id)
    assert old.expires_at is not None and old_now.expires_at is not None
    assert old_now.expires_at <= old.expires_at + timedelta(seconds=1)


def test_rotate_with_a_new_expiration(manager: SyncFacade, user_id: str) -> None:
    old = manager.create_api_key(user_id, "renew", expiration="2099-01-01")
    new = manager.rotate_api_key(old.id, expiration="2099-12-31")
    assert new.expires_at == datetime(2100, 1, 1, tzinfo=UTC)


def test_rotate_refuses_revoked_keys(manager: SyncFacade, user_id: str) -> None:
    old = manager.create_api_key(user_id, "gone")
    manager.revoke_api_key(old.id)
    with pytest.raises(InvalidInputError):
        manager.rotate_api_key(old.id)
    assert manager.list_api_keys(user_id, include_invalid=True).total == 1


def test_rotate_refuses_negative_grace(manager: SyncFacade, user_id: str) -> None:
    old = manager.create_api_key(user_id, "key")
    with pytest.raises(InvalidInputError):
        manager.rotate_api_key(old.id, grace=-1)
    assert manager.validate_api_key(old.secret).id == old.id


# --- bookkeeping and sharing -------------------------------------------------------


@pytest.mark.capability("last_used")
def test_last_used_at_is_recorded_on_success_only(
    manager: SyncFacade, backend: BackendCase, user_id: str
) -> None:
    new = manager.create_api_key(user_id, "used")
    with pytest.raises(InvalidKeyError):
        manager.validate_api_key(backend.wrong_secret_for(new.secret))
    assert manager.get_api_key(new.id).last_used_at is None
    manager.validate_api_key(new.secret)
    used = manager.get_api_key(new.id).last_used_at
    assert used is not None
    assert abs((datetime.now(UTC) - used).total_seconds()) < 60


@pytest.mark.capability("shared_store")
@pytest.mark.parametrize("retire", ["revoke", "delete", "rotate"])
def test_retiring_a_key_reaches_every_manager_of_the_process_at_once(
    make_manager: Callable[..., SyncFacade], user_id: str, retire: str
) -> None:
    # Two managers of one process on one store (the sync and async defaults of a
    # Django project under ASGI, say): each caches for the default 10 seconds.
    issuer, other = make_manager(), make_manager()
    new = issuer.create_api_key(user_id, "shared")
    assert other.validate_api_key(new.secret).id == new.id  # now in other's cache
    if retire == "revoke":
        issuer.revoke_api_key(new.id)
    elif retire == "delete":
        issuer.delete_api_key(new.id)
    else:
        issuer.rotate_api_key(new.id)
    with pytest.raises(InvalidKeyError):  # revoked, or unknown once deleted
        other.validate_api_key(new.secret)


@pytest.mark.capability("shared_store")
def test_cache_disabled_sees_revocation_at_once(
    make_manager: Callable[..., SyncFacade], user_id: str
) -> None:
    issuer = make_manager()
    other = make_manager(cache_ttl=0)
    new = issuer.create_api_key(user_id, "shared")
    assert other.validate_api_key(new.secret).id == new.id
    issuer.revoke_api_key(new.id)
    with pytest.raises(RevokedKeyError):
        other.validate_api_key(new.secret)


def test_concurrent_creation_and_validation(
    manager: SyncFacade, flavour: str, user_id: str
) -> None:
    count = 12
    if flavour == "async":
        import asyncio

        async def one(i: int) -> tuple[str, str]:
            new = await manager.manager.create_api_key(user_id, f"key {i}")
            verified = await manager.manager.validate_api_key(new.secret)
            return new.id, verified.id

        async def all_at_once() -> list[tuple[str, str]]:
            return list(await asyncio.gather(*(one(i) for i in range(count))))

        results = manager.run(all_at_once())
    else:
        results = []
        lock = threading.Lock()

        def work(i: int) -> None:
            new = manager.create_api_key(user_id, f"key {i}")
            verified = manager.validate_api_key(new.secret)
            with lock:
                results.append((new.id, verified.id))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert len(results) == count
    assert all(created == verified for created, verified in results)
    assert manager.list_api_keys(user_id, limit=100).total == count


def test_manager_satisfies_the_protocol(manager: SyncFacade, flavour: str) -> None:
    # Structurally: every method of the protocol, of the manager's flavour (mypy checks the types).
    protocol = apikeys.KeyManager if flavour == "sync" else apikeys.AsyncKeyManager
    methods = [name for name in vars(protocol) if not name.startswith("_")]
    assert "validate_api_key" in methods
    for name in methods:
        method = getattr(manager.manager, name)
        assert inspect.iscoroutinefunction(method) == (flavour == "async"), name


@pytest.mark.parametrize("required", [5, [1], [["read:data"]], ["read data"], ["data:*"]])
def test_bad_required_scopes_are_bad_input(
    manager: SyncFacade, user_id: str, required: object
) -> None:
    new = manager.create_api_key(user_id, "scoped", ["read:data"])
    with pytest.raises(InvalidInputError) as caught:
        manager.validate_api_key(new.secret, required_scopes=required)
    assert caught.value.field == "required_scopes"
    assert manager.validate_api_key(new.secret, required_scopes=iter(["read:data"])).id == new.id


# Whitespace of every kind Python's str.split() splits on, ASCII and not.
BLANK_TEXT = st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x85\xa0\u1680\u2003\u2028\u3000", max_size=6)
BLANK_REQUIRED_SCOPES = st.one_of(
    st.none(),
    BLANK_TEXT,
    st.lists(BLANK_TEXT, min_size=1, max_size=3),
    st.tuples(st.just("read:data"), BLANK_TEXT),
    st.lists(BLANK_TEXT, min_size=1, max_size=3).map(lambda blanks: ["read:data", *blanks]),
)


@given(required=BLANK_REQUIRED_SCOPES)
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_blank_required_scopes_are_refused_not_read_as_none(
    manager: SyncFacade, reader_secret: str, required: object
) -> None:
    """Only an empty sequence requires no scope: None and blanks are a caller's mistake."""
    with pytest.raises(InvalidInputError) as caught:
        manager.validate_api_key(reader_secret, required_scopes=required)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == "required_scopes"
    assert reader_secret not in str(caught.value)


def test_empty_sequences_and_scope_strings_as_required_scopes(
    manager: SyncFacade, reader_secret: str
) -> None:
    none_required: Iterable[str]
    for none_required in ((), [], iter(())):
        assert manager.validate_api_key(reader_secret, required_scopes=none_required)
    # A string is split on whitespace, as scopes are everywhere in apikeys.
    assert manager.validate_api_key(reader_secret, required_scopes="read:data")
    with pytest.raises(InsufficientScopeError) as caught:
        manager.validate_api_key(reader_secret, required_scopes=" read:data  write:data ")
    assert caught.value.missing_scopes == ("write:data",)


@pytest.fixture
def reader_secret(manager: SyncFacade, user_id: str) -> str:
    """The secret of a key holding ``read:data`` only."""
    return str(manager.create_api_key(user_id, "reader", ["read:data"]).secret)
