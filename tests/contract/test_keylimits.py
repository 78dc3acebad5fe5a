"""A key's rate limit and quota as it is created, read, changed and rotated: behaviour every
backend shows, sync and async alike (see conftest.py). Spending them is not tested here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from apikeys import KEEP, InvalidInputError, KeyNotFoundError, NewAPIKey
from apikeys._keylimits import Quota, RateLimit
from tests.contract.backends import BackendCase, MovableClock, SyncFacade

PER_MINUTE = RateLimit(limit=100, window=60)
MONTHLY = Quota(limit=100_000, period=timedelta(days=30))


def _limits_everywhere(manager: SyncFacade, new: NewAPIKey, user_id: str) -> set[Any]:
    """The (rate limit, quota) a key shows when created, fetched, listed and validated."""
    listed = {key.id: key for key in manager.list_api_keys(user_id, include_invalid=True).items}
    shown = [new, manager.get_api_key(new.id), listed[new.id]]
    if new.active:
        shown.append(manager.validate_api_key(new.secret))
    return {(view.rate_limit, view.quota) for view in shown}


def test_a_key_is_created_with_its_limits(
    manager: SyncFacade, user_id: str, clock: MovableClock
) -> None:
    before = clock().replace(microsecond=0)
    new = manager.create_api_key(user_id, "limited", rate_limit=PER_MINUTE, quota=MONTHLY)
    assert _limits_everywhere(manager, new, user_id) == {(PER_MINUTE, MONTHLY)}
    verified = manager.validate_api_key(new.secret)
    # Its quota's first period starts at its creation, in whole seconds.
    assert verified.quota_anchor is not None
    assert verified.quota_anchor.microsecond == 0
    assert before <= verified.quota_anchor <= clock()
    assert verified.meter_id == new.id


def test_limits_are_taken_in_their_short_form(manager: SyncFacade, user_id: str) -> None:
    new = manager.create_api_key(user_id, "short", rate_limit="100/1m", quota="500")
    assert _limits_everywhere(manager, new, user_id) == {(PER_MINUTE, Quota(limit=500))}
    assert manager.get_api_key(new.id).quota == Quota(limit=500, period=None)


def test_a_key_without_limits_has_none(manager: SyncFacade, user_id: str) -> None:
    new = manager.create_api_key(user_id, "unlimited", metadata={"team": "ops"})
    assert _limits_everywhere(manager, new, user_id) == {(None, None)}
    verified = manager.validate_api_key(new.secret)
    assert verified.quota_anchor is None and verified.meter_id == new.id
    assert verified.metadata == {"team": "ops"}  # nothing of the limits shows in metadata


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"rate_limit": 100}, "rate_limit"),
        ({"rate_limit": "100"}, "rate_limit"),  # no window
        ({"rate_limit": "100/1y"}, "rate_limit"),
        ({"rate_limit": "0/1m"}, "rate_limit"),
        ({"rate_limit": "100/2d"}, "rate_limit"),  # longer than a day
        ({"rate_limit": MONTHLY}, "rate_limit"),
        ({"quota": "lots"}, "quota"),
        ({"quota": 5.0}, "quota"),
        ({"quota": "5/400d"}, "quota"),
        ({"quota": PER_MINUTE}, "quota"),
        ({"metadata": {"apikeys": {"rateLimit": {"limit": 1, "window": 1}}}}, "metadata"),
    ],
)
def test_bad_limits_are_refused_before_anything_is_written(
    manager: SyncFacade, user_id: str, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        manager.create_api_key(user_id, "refused", **options)
    assert caught.value.field == field
    assert manager.list_api_keys(user_id, include_invalid=True).total == 0


def test_limits_are_set_changed_kept_and_removed(
    manager: SyncFacade, user_id: str, clock: MovableClock
) -> None:
    new = manager.create_api_key(user_id, "evolving")
    manager.validate_api_key(new.secret)  # cached: a change must still show at once

    changed = manager.update_api_key_limits(new.id, rate_limit="10/1s")
    assert (changed.rate_limit, changed.quota) == (RateLimit(limit=10, window=1), None)
    assert _limits_everywhere(manager, new, user_id) == {(RateLimit(limit=10, window=1), None)} | {
        (None, None)  # the NewAPIKey as created
    }
    changed = manager.update_api_key_limits(new.id, quota=MONTHLY)  # the rate limit is kept
    assert (changed.rate_limit, changed.quota) == (RateLimit(limit=10, window=1), MONTHLY)
    anchor = manager.validate_api_key(new.secret).quota_anchor

    clock.advance(3600)
    kept = manager.update_api_key_limits(new.id, rate_limit=PER_MINUTE, quota=KEEP)
    assert (kept.rate_limit, kept.quota) == (PER_MINUTE, MONTHLY)
    assert manager.validate_api_key(new.secret).quota_anchor == anchor  # kept, period and all

    unchanged = manager.update_api_key_limits(new.id)  # both KEEP
    assert (unchanged.rate_limit, unchanged.quota) == (PER_MINUTE, MONTHLY)

    # Setting a quota, even the same one, starts its period now.
    manager.update_api_key_limits(new.id, quota="100000/30d")
    restarted = manager.validate_api_key(new.secret).quota_anchor
    assert anchor is not None and restarted is not None
    assert restarted >= anchor + timedelta(seconds=3600)

    removed = manager.update_api_key_limits(new.id, rate_limit=None, quota=None)
    assert (removed.rate_limit, removed.quota) == (None, None)
    verified = manager.validate_api_key(new.secret)
    assert (verified.rate_limit, verified.quota, verified.quota_anchor) == (None, None, None)
    assert verified.meter_id == new.id


def test_a_change_of_limits_leaves_the_rest_of_the_key_alone(
    manager: SyncFacade, user_id: str
) -> None:
    new = manager.create_api_key(
        user_id, "kept", ["read:data"], "2099-01-01", metadata={"team": "ops"}
    )
    before = manager.get_api_key(new.id)
    after = manager.update_api_key_limits(new.id, rate_limit=PER_MINUTE, quota=MONTHLY)
    unchanged = ("id", "user_id", "name", "scopes", "expires_at", "metadata", "created_by")
    assert {name: getattr(after, name) for name in unchanged} == {
        name: getattr(before, name) for name in unchanged
    }
    verified = manager.validate_api_key(new.secret, required_scopes=["read:data"])
    assert verified.metadata == {"team": "ops"}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"rate_limit": 60}, "rate_limit"),
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"quota": "-5"}, "quota"),
        ({"quota": object()}, "quota"),
        ({"rate_limit": "100/1m", "quota": "0"}, "quota"),  # one bad part: nothing changes
    ],
)
def test_bad_changes_are_refused_and_change_nothing(
    manager: SyncFacade, user_id: str, options: dict[str, Any], field: str
) -> None:
    new = manager.create_api_key(user_id, "stable", rate_limit=PER_MINUTE, quota=MONTHLY)
    with pytest.raises(InvalidInputError) as caught:
        manager.update_api_key_limits(new.id, **options)
    assert caught.value.field == field
    assert _limits_everywhere(manager, new, user_id) == {(PER_MINUTE, MONTHLY)}


def test_changing_the_limits_of_an_unknown_or_revoked_key_is_refused(
    manager: SyncFacade, backend: BackendCase, user_id: str
) -> None:
    new = manager.create_api_key(user_id, "owned", rate_limit=PER_MINUTE)
    unknown = manager.create_api_key(user_id, "deleted")
    manager.delete_api_key(unknown.id)
    with pytest.raises(KeyNotFoundError):
        manager.update_api_key_limits(unknown.id, rate_limit=None)
    # Scoped to an owner, another owner's key is not found, as an unknown one.
    with pytest.raises(KeyNotFoundError):
        manager.update_api_key_limits(new.id, rate_limit=None, user_id=backend.new_user_id())
    assert manager.update_api_key_limits(new.id, quota="5", user_id=user_id).quota == Quota(limit=5)
    manager.revoke_api_key(new.id)
    with pytest.raises(InvalidInputError) as caught:
        manager.update_api_key_limits(new.id, rate_limit=None)
    assert caught.value.field == "key_id"
    assert manager.get_api_key(new.id).rate_limit == PER_MINUTE


def test_a_rotated_key_keeps_the_limits_and_the_meter(manager: SyncFacade, user_id: str) -> None:
    first = manager.create_api_key(user_id, "rotating", rate_limit=PER_MINUTE, quota=MONTHLY)
    anchor = manager.validate_api_key(first.secret).quota_anchor
    key = first
    for _ in range(2):
        key = manager.rotate_api_key(key.id)
        assert _limits_everywhere(manager, key, user_id) == {(PER_MINUTE, MONTHLY)}
        verified = manager.validate_api_key(key.secret)
        # Rotating refills nothing: the same meter, the same quota period.
        assert (verified.meter_id, verified.quota_anchor) == (first.id, anchor)


@pytest.mark.capability("rotation_grace")
def test_both_keys_of_a_grace_period_share_one_meter(manager: SyncFacade, user_id: str) -> None:
    old = manager.create_api_key(user_id, "graceful", rate_limit="5/1s")
    new = manager.rotate_api_key(old.id, grace=3600)
    meters = {manager.validate_api_key(key.secret).meter_id for key in (old, new)}
    assert meters == {old.id}
    assert manager.validate_api_key(new.secret).rate_limit == RateLimit(limit=5, window=1)


def test_a_rotated_key_without_limits_keeps_its_meter(manager: SyncFacade, user_id: str) -> None:
    old = manager.create_api_key(user_id, "plain", metadata={"team": "ops"})
    new = manager.rotate_api_key(old.id)
    verified = manager.validate_api_key(new.secret)
    assert (verified.rate_limit, verified.quota, verified.meter_id) == (None, None, old.id)
    assert verified.metadata == {"team": "ops"}
    # Limits set later on the replacement still count on the lineage's meter.
    manager.update_api_key_limits(new.id, quota="10")
    assert manager.validate_api_key(new.secret).meter_id == old.id


def test_a_key_minted_by_a_key_has_a_meter_of_its_own(manager: SyncFacade, user_id: str) -> None:
    parent = manager.create_api_key(user_id, "parent", rate_limit=PER_MINUTE)
    child = manager.create_api_key(user_id, "child", created_by=parent.id)
    assert manager.validate_api_key(child.secret).meter_id == child.id
    assert manager.get_api_key(child.id).rate_limit is None
