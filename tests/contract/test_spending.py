"""``validate_api_key(cost=...)`` spends a key's rate limit and quota: behaviour every backend
shows, sync and async alike (see conftest.py). Clerk's managers here count in Redis."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from apikeys import (
    InsufficientScopeError,
    InvalidInputError,
    InvalidKeyError,
    KeyEvent,
    QuotaExceededError,
    RateLimitedError,
    RevokedKeyError,
    add_event_listener,
    remove_event_listener,
)
from tests.contract.backends import BackendCase, MovableClock, SyncFacade

START = datetime(2031, 3, 1, 12, 0, 0, tzinfo=UTC)


class StillClock(MovableClock):
    """A clock that stands still until a test moves it: windows never end by themselves."""

    def __call__(self) -> datetime:
        return START + self.offset


@pytest.fixture
def clock() -> MovableClock:
    return StillClock()


def test_a_rate_limit_admits_its_limit_per_window_then_refills(
    manager: SyncFacade, user_id: str, clock: MovableClock
) -> None:
    new = manager.create_api_key(user_id, "rated", rate_limit="3/1m")
    left = [manager.validate_api_key(new.secret).usage.rate_limit.remaining for _ in range(3)]
    assert left == [2, 1, 0]
    with pytest.raises(RateLimitedError) as refused:
        manager.validate_api_key(new.secret)
    assert not isinstance(refused.value, QuotaExceededError)
    assert refused.value.status_code == 429
    assert refused.value.retry_after == 60  # the clock stands at the window's start
    clock.advance(60)
    usage = manager.validate_api_key(new.secret).usage
    assert usage.rate_limit.remaining == 2
    assert usage.rate_limit.limit == 3
    assert usage.rate_limit.seconds_left(clock()) == 60
    assert usage.quota is None


def test_a_quota_spends_cost_and_refills_each_period(
    manager: SyncFacade, user_id: str, clock: MovableClock
) -> None:
    new = manager.create_api_key(user_id, "metered", quota="10/30d")
    assert manager.validate_api_key(new.secret, cost=4).usage.quota.remaining == 6
    assert manager.validate_api_key(new.secret, cost=4).usage.quota.remaining == 2
    with pytest.raises(QuotaExceededError) as refused:
        manager.validate_api_key(new.secret, cost=3)
    anchor = manager.validate_api_key(new.secret, cost=1).quota_anchor
    assert anchor is not None
    assert refused.value.refills_at == anchor + timedelta(days=30)
    assert refused.value.code == "quota_exceeded"
    # The refused call spent nothing: of the two units left, the call above took one.
    usage = manager.validate_api_key(new.secret, cost=1).usage
    assert usage.quota.remaining == 0
    assert usage.quota.resets_at == anchor + timedelta(days=30)
    with pytest.raises(QuotaExceededError):
        manager.validate_api_key(new.secret)
    clock.advance(timedelta(days=30).total_seconds())
    assert manager.validate_api_key(new.secret, cost=10).usage.quota.remaining == 0


def test_a_one_off_quota_never_refills(
    manager: SyncFacade, user_id: str, clock: MovableClock
) -> None:
    new = manager.create_api_key(user_id, "credits", quota="5")
    assert manager.validate_api_key(new.secret, cost=5).usage.quota.remaining == 0
    clock.advance(timedelta(days=3650).total_seconds())
    with pytest.raises(QuotaExceededError) as refused:
        manager.validate_api_key(new.secret)
    assert (refused.value.refills_at, refused.value.retry_after) == (None, None)


def test_a_call_the_rate_limit_refuses_spends_no_quota(
    manager: SyncFacade, user_id: str, clock: MovableClock
) -> None:
    new = manager.create_api_key(user_id, "both", rate_limit="2/1h", quota="5/30d")
    usage = manager.validate_api_key(new.secret).usage
    assert (usage.rate_limit.remaining, usage.quota.remaining) == (1, 4)
    manager.validate_api_key(new.secret)
    for _ in range(3):
        with pytest.raises(RateLimitedError):
            manager.validate_api_key(new.secret)
    clock.advance(3600)
    usage = manager.validate_api_key(new.secret).usage
    assert (usage.rate_limit.remaining, usage.quota.remaining) == (1, 2)


def test_a_call_the_quota_refuses_spends_no_rate_limit(manager: SyncFacade, user_id: str) -> None:
    new = manager.create_api_key(user_id, "both", rate_limit="10/1h", quota="3")
    manager.validate_api_key(new.secret, cost=2)
    with pytest.raises(QuotaExceededError):
        manager.validate_api_key(new.secret, cost=2)
    usage = manager.validate_api_key(new.secret, cost=1).usage
    assert (usage.rate_limit.remaining, usage.quota.remaining) == (7, 0)


def test_a_refusal_carries_what_the_limits_still_have(
    manager: SyncFacade, user_id: str, clock: MovableClock
) -> None:
    new = manager.create_api_key(user_id, "both", rate_limit="3/1h", quota="10")
    manager.validate_api_key(new.secret, cost=2)
    with pytest.raises(RateLimitedError) as refused:
        manager.validate_api_key(new.secret, cost=2)
    usage = refused.value.usage
    assert usage is not None and usage.rate_limit is not None and usage.quota is not None
    # As before the call, which spent nothing: 1 of 3 in the window, 8 of 10 credits.
    assert (usage.rate_limit.limit, usage.rate_limit.remaining) == (3, 1)
    assert (usage.quota.limit, usage.quota.remaining) == (10, 8)
    assert usage.at == clock()  # read by the manager's clock
    assert usage.rate_limit.seconds_left(usage.at) == 3600
    assert refused.value.key_id == new.id
    assert new.secret not in repr(refused.value) and new.secret not in str(refused.value)
    usage = manager.validate_api_key(new.secret, cost=1).usage
    assert (usage.rate_limit.remaining, usage.quota.remaining, usage.at) == (0, 7, clock())


def test_a_quota_refusal_carries_what_the_quota_still_has(
    manager: SyncFacade, user_id: str
) -> None:
    new = manager.create_api_key(user_id, "credits", quota="5/30d")
    manager.validate_api_key(new.secret, cost=3)
    with pytest.raises(QuotaExceededError) as refused:
        manager.validate_api_key(new.secret, cost=3)
    usage = refused.value.usage
    assert usage is not None and usage.quota is not None
    assert (usage.quota.limit, usage.quota.remaining) == (5, 2)
    assert usage.quota.resets_at == refused.value.refills_at


def test_a_call_its_limits_refuse_is_reported_once_as_rejected(
    make_manager: Callable[..., SyncFacade], user_id: str
) -> None:
    manager = make_manager(cache_ttl=300)  # the second call is a cache hit
    new = manager.create_api_key(user_id, "reported", rate_limit="1/1h")
    seen: list[KeyEvent] = []
    listener = add_event_listener(seen.append)
    try:
        manager.validate_api_key(new.secret)
        with pytest.raises(RateLimitedError):
            manager.validate_api_key(new.secret)
    finally:
        remove_event_listener(listener)
    reported = [(event.kind, event.key_id, event.reason) for event in seen]
    assert reported == [("validated", new.id, None), ("rejected", new.id, "rate_limited")]


def test_refused_keys_are_refused_as_before_and_spend_nothing(
    manager: SyncFacade, user_id: str, backend: BackendCase
) -> None:
    new = manager.create_api_key(user_id, "scoped", ["read:data"], rate_limit="1/1h", quota="1")
    with pytest.raises(InsufficientScopeError):
        manager.validate_api_key(new.secret, required_scopes=["write:data"])
    with pytest.raises(InvalidKeyError):
        manager.validate_api_key(backend.wrong_secret_for(new.secret))
    usage = manager.validate_api_key(new.secret, required_scopes=["read:data"]).usage
    assert (usage.rate_limit.remaining, usage.quota.remaining) == (0, 0)
    manager.revoke_api_key(new.id)
    with pytest.raises(InvalidKeyError) as refused:
        manager.validate_api_key(new.secret)
    assert not isinstance(refused.value, RateLimitedError)
    if backend.name != "clerk":  # Clerk does not say why it refuses a key
        assert isinstance(refused.value, RevokedKeyError)


@pytest.mark.parametrize("cost", [0, -1, 10**12 + 1, True, 1.5, "1", None])
def test_a_bad_cost_is_refused_before_anything_else(
    manager: SyncFacade, user_id: str, cost: object
) -> None:
    new = manager.create_api_key(user_id, "credits", quota="5")
    for secret in (new.secret, "not a key"):
        with pytest.raises(InvalidInputError) as refused:
            manager.validate_api_key(secret, cost=cost)
        assert refused.value.field == "cost"
    assert manager.validate_api_key(new.secret, cost=5).usage.quota.remaining == 0


def test_the_largest_cost_is_taken(manager: SyncFacade, user_id: str) -> None:
    new = manager.create_api_key(user_id, "big", quota=f"{10**12}")
    assert manager.validate_api_key(new.secret, cost=10**12).usage.quota.remaining == 0


def test_cached_validations_spend_too(
    make_manager: Callable[..., SyncFacade], user_id: str
) -> None:
    manager = make_manager(cache_ttl=300)
    new = manager.create_api_key(user_id, "cached", rate_limit="2/1h")
    first = manager.validate_api_key(new.secret)
    second = manager.validate_api_key(new.secret)
    with pytest.raises(RateLimitedError):
        manager.validate_api_key(new.secret)
    # Each call has a copy of its own: the first still shows what it left.
    assert (first.usage.rate_limit.remaining, second.usage.rate_limit.remaining) == (1, 0)
    assert first is not second


def test_a_key_without_limits_spends_nothing_and_shares_its_cached_validation(
    make_manager: Callable[..., SyncFacade], user_id: str
) -> None:
    manager = make_manager(cache_ttl=300)
    new = manager.create_api_key(user_id, "free")
    first = manager.validate_api_key(new.secret, cost=10**12)
    assert first.usage is None
    again = manager.validate_api_key(new.secret, cost=10**12)
    assert again == first and again.usage is None
    assert "usage" not in first.model_dump()


def test_what_is_left_is_not_part_of_the_dumped_key(manager: SyncFacade, user_id: str) -> None:
    new = manager.create_api_key(user_id, "limited", rate_limit="5/1m")
    verified = manager.validate_api_key(new.secret)
    assert verified.usage is not None
    assert "usage" not in verified.model_dump()
    assert "usage" not in verified.model_dump_json()


@pytest.mark.capability("rotation_grace")
def test_both_keys_of_a_grace_period_spend_from_one_meter(
    manager: SyncFacade, user_id: str
) -> None:
    old = manager.create_api_key(user_id, "graceful", rate_limit="10/1h", quota="3/30d")
    manager.validate_api_key(old.secret)
    new = manager.rotate_api_key(old.id, grace=3600)
    usage = manager.validate_api_key(new.secret).usage
    assert (usage.rate_limit.remaining, usage.quota.remaining) == (8, 1)
    assert manager.validate_api_key(old.secret).usage.quota.remaining == 0
    for key in (old, new):
        with pytest.raises(QuotaExceededError):
            manager.validate_api_key(key.secret)


def test_a_rotated_key_spends_what_its_predecessor_left(manager: SyncFacade, user_id: str) -> None:
    old = manager.create_api_key(user_id, "rotated", quota="3")
    manager.validate_api_key(old.secret, cost=2)
    new = manager.rotate_api_key(old.id)
    assert manager.validate_api_key(new.secret).usage.quota.remaining == 0


def test_limits_set_later_apply_to_the_next_call(manager: SyncFacade, user_id: str) -> None:
    fresh = manager.create_api_key(user_id, "fresh")
    assert manager.validate_api_key(fresh.secret).usage is None
    manager.update_api_key_limits(fresh.id, rate_limit="1/1h")
    assert manager.validate_api_key(fresh.secret).usage.rate_limit.remaining == 0
    with pytest.raises(RateLimitedError):
        manager.validate_api_key(fresh.secret)


def test_a_refusal_names_the_key_and_is_reported(
    manager: SyncFacade, user_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    new = manager.create_api_key(user_id, "reported", quota="1")
    manager.validate_api_key(new.secret)
    with (
        caplog.at_level(logging.INFO, logger="apikeys"),
        pytest.raises(QuotaExceededError) as refused,
    ):
        manager.validate_api_key(new.secret)
    assert refused.value.key_id == new.id
    events = [getattr(record, "apikeys_event", None) for record in caplog.records]
    assert [(event.kind, event.key_id, event.reason) for event in events if event][-1] == (
        "rejected",
        new.id,
        "rate_limited",
    )
