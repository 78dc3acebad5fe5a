"""Keys created by keys (``created_by``), the limit on active keys, and revocation
reasons: behaviour every backend shows, sync and async alike (see conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apikeys import (
    InvalidInputError,
    InvalidKeyError,
    KeyLimitReachedError,
    KeyNotFoundError,
    NewAPIKey,
    RevokedKeyError,
)
from tests.contract.backends import BackendCase, SyncFacade


def _family(manager: SyncFacade, user_id: str) -> tuple[NewAPIKey, NewAPIKey, NewAPIKey]:
    """A parent, the child it created, and the grandchild the child created."""
    parent = manager.create_api_key(user_id, "parent", ["read:data"])
    child = manager.create_api_key(user_id, "child", ["read:data"], created_by=parent.id)
    grandchild = manager.create_api_key(user_id, "grandchild", created_by=child.id)
    return parent, child, grandchild


def test_a_key_records_its_creator(manager: SyncFacade, user_id: str) -> None:
    parent, child, grandchild = _family(manager, user_id)
    assert parent.created_by is None
    assert child.created_by == parent.id
    assert manager.get_api_key(grandchild.id).created_by == child.id
    listed = {key.id: key.created_by for key in manager.list_api_keys(user_id).items}
    assert listed == {parent.id: None, child.id: parent.id, grandchild.id: child.id}


@pytest.mark.parametrize("end", ["revoke", "delete"])
def test_ending_a_key_revokes_what_it_created_transitively(
    manager: SyncFacade, backend: BackendCase, user_id: str, end: str
) -> None:
    parent, child, grandchild = _family(manager, user_id)
    unrelated = manager.create_api_key(user_id, "unrelated")
    other_owner = backend.new_user_id()
    foreign = manager.create_api_key(other_owner, "another owner's")
    foreign_child = manager.create_api_key(other_owner, "its child", created_by=foreign.id)
    for key in (child, grandchild):
        manager.validate_api_key(key.secret)  # cached, where there is a cache

    if end == "revoke":
        manager.revoke_api_key(parent.id, reason="leaked")
    else:
        manager.delete_api_key(parent.id)

    for key in (child, grandchild):
        with pytest.raises(RevokedKeyError):
            manager.validate_api_key(key.secret)
    verb = "revoked" if end == "revoke" else "deleted"
    assert manager.get_api_key(child.id).revocation_reason == f"creator {parent.id} {verb}"
    assert manager.get_api_key(grandchild.id).revocation_reason == f"creator {child.id} revoked"
    for key in (unrelated, foreign, foreign_child):
        manager.validate_api_key(key.secret)
        assert manager.get_api_key(key.id).active


def test_revoking_a_child_leaves_its_creator_alone(manager: SyncFacade, user_id: str) -> None:
    parent, child, grandchild = _family(manager, user_id)
    manager.revoke_api_key(child.id)
    manager.validate_api_key(parent.secret)
    with pytest.raises(InvalidKeyError):
        manager.validate_api_key(grandchild.secret)
    assert manager.get_api_key(grandchild.id).revoked


def test_rotation_hands_the_children_over(manager: SyncFacade, user_id: str) -> None:
    parent, child, grandchild = _family(manager, user_id)
    replacement = manager.rotate_api_key(parent.id)
    assert replacement.created_by is None  # it takes the old key's creator
    assert manager.get_api_key(child.id).created_by == replacement.id
    manager.validate_api_key(child.secret)  # the rotation did not end them
    manager.validate_api_key(grandchild.secret)
    manager.revoke_api_key(replacement.id)
    for key in (child, grandchild):
        with pytest.raises(RevokedKeyError):
            manager.validate_api_key(key.secret)


def test_a_rotated_child_keeps_its_creator(manager: SyncFacade, user_id: str) -> None:
    parent, child, _ = _family(manager, user_id)
    replacement = manager.rotate_api_key(child.id)
    assert replacement.created_by == parent.id
    manager.revoke_api_key(parent.id)
    with pytest.raises(InvalidKeyError):
        manager.validate_api_key(replacement.secret)
    assert manager.get_api_key(replacement.id).revoked


def _ends_with(key_expiry: datetime | None, creator_expiry: datetime | None) -> bool:
    """The key ends when its creator does (Clerk keeps expiries to the second)."""
    assert key_expiry is not None and creator_expiry is not None
    return abs(key_expiry - creator_expiry) <= timedelta(seconds=1)


def test_a_key_never_outlives_its_creator(manager: SyncFacade, user_id: str) -> None:
    parent = manager.create_api_key(user_id, "parent", expiration=timedelta(days=1))
    forever = manager.create_api_key(user_id, "no expiry asked", created_by=parent.id)
    longer = manager.create_api_key(
        user_id, "longer asked", expiration=timedelta(days=30), created_by=parent.id
    )
    shorter = manager.create_api_key(
        user_id, "shorter asked", expiration=timedelta(hours=1), created_by=parent.id
    )
    for capped in (forever, longer):
        assert _ends_with(capped.expires_at, parent.expires_at)
        assert _ends_with(manager.get_api_key(capped.id).expires_at, parent.expires_at)
    assert shorter.expires_at is not None and parent.expires_at is not None
    assert shorter.expires_at < parent.expires_at - timedelta(hours=12)


def test_a_key_rotated_with_grace_mints_only_keys_that_end_with_it(
    manager: SyncFacade, user_id: str
) -> None:
    leaked = manager.create_api_key(user_id, "leaked")  # no expiry of its own
    manager.validate_api_key(leaked.secret)  # a verification remembers "never expires"
    manager.rotate_api_key(leaked.id, grace=timedelta(hours=1))
    cut_off = manager.get_api_key(leaked.id).expires_at
    minted = manager.create_api_key(user_id, "minted in the grace period", created_by=leaked.id)
    assert _ends_with(minted.expires_at, cut_off)
    assert _ends_with(manager.get_api_key(minted.id).expires_at, cut_off)


def test_a_rotated_child_never_outlives_its_creator(manager: SyncFacade, user_id: str) -> None:
    parent = manager.create_api_key(user_id, "parent", expiration=timedelta(days=1))
    child = manager.create_api_key(user_id, "child", created_by=parent.id)
    replacement = manager.rotate_api_key(child.id, expiration=timedelta(days=365))
    assert _ends_with(replacement.expires_at, parent.expires_at)
    assert _ends_with(manager.get_api_key(replacement.id).expires_at, parent.expires_at)


def test_a_rotation_with_grace_counts_against_the_limit(
    make_manager: Callable[..., SyncFacade], user_id: str
) -> None:
    manager = make_manager(max_active_keys_per_owner=2)
    first = manager.create_api_key(user_id, "first")
    second = manager.create_api_key(user_id, "second")
    with pytest.raises(KeyLimitReachedError):
        manager.rotate_api_key(first.id, grace=timedelta(hours=1))  # both would stay active
    assert manager.list_api_keys(user_id).total == 2
    manager.validate_api_key(first.secret)  # the refused rotation changed nothing
    replacement = manager.rotate_api_key(first.id)  # no grace: one key for one
    assert manager.list_api_keys(user_id).total == 2
    manager.revoke_api_key(second.id)
    manager.rotate_api_key(replacement.id, grace=timedelta(hours=1))
    assert manager.list_api_keys(user_id).total == 2


@pytest.mark.parametrize("creator", ["revoked", "another owner's", "unknown"])
def test_only_an_active_key_of_the_owner_creates_keys(
    manager: SyncFacade, backend: BackendCase, user_id: str, creator: str
) -> None:
    if creator == "revoked":
        key = manager.create_api_key(user_id, "revoked creator")
        manager.revoke_api_key(key.id)
        creator_id = key.id
    elif creator == "another owner's":
        creator_id = manager.create_api_key(backend.new_user_id(), "foreign creator").id
    else:
        creator_id = "AAAAAAAAAAAA"
    before = manager.list_api_keys(user_id, include_invalid=True).total
    with pytest.raises(InvalidInputError) as caught:
        manager.create_api_key(user_id, "orphan", created_by=creator_id)
    assert caught.value.field == "created_by"
    assert manager.list_api_keys(user_id, include_invalid=True).total == before


def test_lookups_scoped_to_an_owner_treat_other_owners_keys_as_unknown(
    manager: SyncFacade, backend: BackendCase, user_id: str
) -> None:
    foreign = manager.create_api_key(backend.new_user_id(), "another owner's")
    for call in (manager.get_api_key, manager.revoke_api_key, manager.delete_api_key):
        with pytest.raises(KeyNotFoundError):
            call(foreign.id, user_id=user_id)
    manager.validate_api_key(foreign.secret)
    own = manager.create_api_key(user_id, "own")
    assert manager.get_api_key(own.id, user_id=user_id).id == own.id
    assert manager.revoke_api_key(own.id, user_id=user_id).revoked
    manager.delete_api_key(own.id, user_id=user_id)


# --- the limit on active keys ---------------------------------------------------------


def test_the_active_key_limit(
    make_manager: Callable[..., SyncFacade], backend: BackendCase, user_id: str
) -> None:
    manager = make_manager(max_active_keys_per_owner=3)
    keys = [manager.create_api_key(user_id, f"key {n}") for n in range(3)]
    with pytest.raises(KeyLimitReachedError) as caught:
        manager.create_api_key(user_id, "one too many", created_by=keys[0].id)
    assert caught.value.status_code == 409
    assert caught.value.code == "key_limit_reached"
    assert "3 active API keys" in caught.value.message
    assert "max_active_keys_per_owner" in caught.value.message
    assert manager.list_api_keys(user_id, include_invalid=True).total == 3
    # Other owners have limits of their own; revoked keys no longer count.
    manager.create_api_key(backend.new_user_id(), "another owner")
    manager.revoke_api_key(keys[1].id)
    manager.create_api_key(user_id, "fits again")


def test_zero_means_no_limit(make_manager: Callable[..., SyncFacade], user_id: str) -> None:
    manager = make_manager(max_active_keys_per_owner=0)
    for n in range(4):
        manager.create_api_key(user_id, f"key {n}")
    assert manager.list_api_keys(user_id).total == 4


def test_the_default_limit_is_100(manager: SyncFacade) -> None:
    assert manager.max_active_keys_per_owner == 100


# --- revocation reasons ----------------------------------------------------------------


@pytest.mark.parametrize("reason", ["\x00", "nul\x00inside", "line\nbreak", "\x1b[31m", "\ud800"])
def test_reasons_with_control_characters_are_refused_before_any_io(
    manager: SyncFacade, user_id: str, reason: str
) -> None:
    key = manager.create_api_key(user_id, "kept")
    with pytest.raises(InvalidInputError) as caught:
        manager.revoke_api_key(key.id, reason=reason)
    assert caught.value.field == "reason"
    assert manager.get_api_key(key.id).active
    manager.validate_api_key(key.secret)


# All of Unicode, surrogates and control characters included, with the ones that
# once broke a revocation drawn often.
_ANY_CHARACTER = st.characters(exclude_categories=()) | st.sampled_from(
    ["\x00", "\n", "\r", "\x1b", "\x7f", "\ud800", "\u202e"]
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(reason=st.text(alphabet=_ANY_CHARACTER, max_size=40))
def test_any_reason_is_refused_untouched_or_stored_exactly(
    manager: SyncFacade, user_id: str, reason: str
) -> None:
    key = manager.create_api_key(user_id, "reason", ["read:data"])
    refusal: InvalidInputError | None = None
    try:
        revoked = manager.revoke_api_key(key.id, reason=reason)
    except InvalidInputError as refused:
        refusal = refused
    stored = manager.get_api_key(key.id)
    manager.delete_api_key(key.id)  # stay below the active-key limit
    if refusal is not None:
        assert refusal.field == "reason"
        assert stored.active
    else:
        assert revoked.revocation_reason == reason
        assert stored.revocation_reason == reason
