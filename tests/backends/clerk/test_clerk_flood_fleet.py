"""Clerk managers sharing a Redis share the verification budget, the known keys and Clerk's pause.

Two managers of one flavour stand for two processes of a deployment (their
own caches, guards and HTTP clients; only Redis between them). The budget's
moving window and the pause's expiry run on Redis's time: each test takes far
less than a window, and asserts so. With Redis down, each manager falls back
to what it knows itself: never an error of its own, never an acceptance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import pytest

from apikeys import BackendUnavailableError
from apikeys.testing import FakeClerk
from benchmarks.clerk_flood import outcome_of
from tests.backends.clerk.twins import Twin
from tests.redis_server import RedisServer

pytest.importorskip("redis")

pytestmark = pytest.mark.clerk

VERIFY = "POST /api_keys/verify"
BUDGET = 20
WINDOW = 10.0
REFUSALS = {"invalid_api_key", "verification_budget_spent"}


def stranger(index: int) -> str:
    return f"ak_fleetstranger{index:024d}"


def present(twin: Twin, secret: str) -> str:
    return outcome_of(partial(twin.validate_api_key, secret))


def stranger_calls(fake: FakeClerk) -> int:
    return sum(
        1
        for request in fake.requests
        if request.route == "/api_keys/verify" and "fleetstranger" in str(request.body)
    )


@pytest.fixture
def pair(make_twin: Callable[..., Twin], redis: RedisServer) -> tuple[Twin, Twin]:
    """Two managers sharing ``redis``, with the default budget and a cache."""
    return make_twin(redis_url=redis.url, cache_ttl=10), make_twin(
        redis_url=redis.url, cache_ttl=10
    )


def test_two_managers_share_one_budget_and_the_known_keys(
    pair: tuple[Twin, Twin], fake: FakeClerk, user_id: str
) -> None:
    first, second = pair
    known = first.create_api_key(user_id, "known").secret
    first.validate_api_key(known)  # known from here on, to every process
    started = time.monotonic()
    outcomes = [present(pair[index % 2], stranger(index)) for index in range(200)]
    assert set(outcomes) == REFUSALS
    assert second.validate_api_key(known)  # never seen here, cache empty: known through Redis
    elapsed = time.monotonic() - started
    assert elapsed < WINDOW  # one window: the shared budget, exactly
    # The known key's first verification took one; the strangers had the rest, no more.
    assert stranger_calls(fake) == outcomes.count("invalid_api_key") == BUDGET - 1


def test_clerk_429_pauses_both_managers(
    pair: tuple[Twin, Twin], fake: FakeClerk, user_id: str
) -> None:
    first, second = pair
    secret = first.create_api_key(user_id, "reader").secret
    fake.rate_limit(retry_after="30")
    with pytest.raises(BackendUnavailableError) as limited:
        first.validate_api_key(secret)
    assert limited.value.retry_after == 30.0
    calls = fake.count()
    with pytest.raises(BackendUnavailableError) as paused:
        second.validate_api_key(secret)  # another process: not sent to Clerk either
    assert 25.0 < (paused.value.retry_after or 0) <= 30.0
    with pytest.raises(BackendUnavailableError):
        second.list_api_keys(user_id)
    assert fake.count() == calls


def test_with_redis_down_each_manager_guards_itself(
    pair: tuple[Twin, Twin], fake: FakeClerk, user_id: str, redis: RedisServer
) -> None:
    first = pair[0]
    known = first.create_api_key(user_id, "known").secret
    first.validate_api_key(known)
    first.manager.cache.clear()
    redis.kill()
    started = time.monotonic()
    outcomes = [present(pair[index % 2], stranger(index)) for index in range(200)]
    assert set(outcomes) == REFUSALS  # no error of apikeys' own, and nothing accepted
    assert time.monotonic() - started < WINDOW
    assert stranger_calls(fake) <= 2 * BUDGET  # each process's own budget
    assert first.validate_api_key(known)  # known in this process
    fake.rate_limit(retry_after="30")
    with pytest.raises(BackendUnavailableError):
        first.validate_api_key(known)
    calls = fake.count()
    with pytest.raises(BackendUnavailableError) as paused:
        first.validate_api_key(known)  # paused in this process
    assert (paused.value.retry_after or 0) > 25.0
    assert fake.count() == calls
