"""The failure limiter's and the concurrency cap's bounds, and the refusals their users see."""

from __future__ import annotations

import math
import os
import threading

import pytest

from apikeys import BackendUnavailableError, InvalidKeyError, RateLimitedError, RevokedKeyError
from apikeys._ratelimit import (
    DEFAULT_FAILURE_WINDOW,
    DEFAULT_MAX_FAILURES,
    DEFAULT_MAX_TRACKED_KEYS,
    ConcurrencyCap,
    FailureLimiter,
    counts_as_failure,
    default_hash_concurrency,
)
from tests.reliability.helpers import FakeClock

LIMITER_BOUNDS = "max_failures must be >= 0, window > 0 and max_tracked >= 1"
CAP_BOUNDS = "limit must be >= 1 and timeout > 0"


def test_the_defaults() -> None:
    limiter = FailureLimiter()
    assert (limiter.max_failures, limiter.window, limiter.max_tracked) == (100, 60.0, 10_000)
    assert (DEFAULT_MAX_FAILURES, DEFAULT_FAILURE_WINDOW, DEFAULT_MAX_TRACKED_KEYS) == (
        100,
        60.0,
        10_000,
    )
    assert ConcurrencyCap(3).timeout == 5.0


@pytest.mark.parametrize(
    ("max_failures", "window", "max_tracked"),
    [(0, 1e-9, 1), (1, 0.001, 1), (1_000_000, 86_400, 1_000_000)],
)
def test_limits_at_their_bounds_are_accepted(
    max_failures: int, window: float, max_tracked: int
) -> None:
    limiter = FailureLimiter(max_failures, window, max_tracked=max_tracked)
    assert (limiter.max_failures, limiter.window, limiter.max_tracked) == (
        max_failures,
        window,
        max_tracked,
    )
    assert limiter.enabled is (max_failures > 0)


@pytest.mark.parametrize(
    ("max_failures", "window", "max_tracked"),
    [
        (-1, 60.0, 10),
        (1, 0.0, 10),
        (1, -1e-9, 10),
        (1, math.nan, 10),
        (1, math.inf, 10),
        (1, 60.0, 0),
        (1, 60.0, -1),
    ],
)
def test_limits_beyond_their_bounds_are_refused_naming_the_bounds(
    max_failures: int, window: float, max_tracked: int
) -> None:
    with pytest.raises(ValueError, match="max_failures") as caught:
        FailureLimiter(max_failures, window, max_tracked=max_tracked)
    assert str(caught.value) == LIMITER_BOUNDS


@pytest.mark.parametrize("limit", [1, 64])
def test_a_cap_at_its_bounds_is_accepted(limit: int) -> None:
    cap = ConcurrencyCap(limit, timeout=1e-9)
    assert (cap.limit, cap.timeout) == (limit, 1e-9)


@pytest.mark.parametrize(("limit", "timeout"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, math.nan)])
def test_a_cap_beyond_its_bounds_is_refused_naming_the_bounds(limit: int, timeout: float) -> None:
    with pytest.raises(ValueError, match="limit") as caught:
        ConcurrencyCap(limit, timeout=timeout)
    assert str(caught.value) == CAP_BOUNDS


def test_a_refusal_says_too_many_requests_and_when_to_retry_to_the_millisecond() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(3, 1.0, clock=clock)  # a token every third of a second
    for _ in range(3):
        limiter.take("client")
    with pytest.raises(RateLimitedError) as caught:
        limiter.take("client")
    assert caught.value.message == "Too many requests"
    assert caught.value.status_code == 429
    assert caught.value.retry_after == 0.334  # 1/3 s, rounded up: a retry then succeeds
    clock.advance(0.334)
    limiter.take("client")


def test_take_counts_only_attempts_it_lets_through() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(2, 10.0, clock=clock)
    limiter.take("client")
    limiter.take("client")
    for _ in range(5):  # refused: none of these take a token or push the refill back
        with pytest.raises(RateLimitedError):
            limiter.take("client")
    clock.advance(5.0)
    limiter.take("client")
    assert len(limiter) == 1


def test_a_disabled_limiter_takes_nothing_and_refuses_no_one() -> None:
    limiter = FailureLimiter(0)
    for _ in range(10):
        limiter.take("client")
        with limiter.attempt("client"), pytest.raises(InvalidKeyError):
            raise InvalidKeyError()
    assert limiter.retry_after("client") is None
    assert len(limiter) == 0


def test_record_failure_counts_the_failures_the_bucket_holds() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(4, 8.0, clock=clock)  # a token every 2 s
    assert [limiter.record_failure("client") for _ in range(4)] == [1, 2, 3, 4]
    clock.advance(2.0)
    assert limiter.record_failure("client") == 4
    clock.advance(3.0)
    assert limiter.record_failure("client") == 4  # 1.5 tokens back: 2.5 + 1 held, rounded up
    assert limiter.record_failure("other") == 1


def test_reset_of_a_key_never_seen_is_harmless() -> None:
    limiter = FailureLimiter(1)
    limiter.reset("never seen")
    limiter.record_failure("client")
    limiter.reset("client")
    limiter.check("client")
    assert len(limiter) == 0


def test_expired_and_revoked_keys_are_no_failed_attempts() -> None:
    assert counts_as_failure(InvalidKeyError())
    assert not counts_as_failure(RevokedKeyError())
    assert not counts_as_failure(ValueError())


async def test_the_async_twins_count_as_the_sync_methods() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(2, 10.0, clock=clock)
    await limiter.check_async("client")
    await limiter.record_failure_async("client")
    await limiter.take_async("client")
    with pytest.raises(RateLimitedError):
        await limiter.check_async("client")
    with pytest.raises(RateLimitedError):
        await limiter.take_async("client")


def test_threads_get_back_every_turn_they_give_and_no_more() -> None:
    cap = ConcurrencyCap(2, timeout=0.01)
    for _ in range(3):
        # Two at once: both let in, again and again; a third never.
        with cap.hold(), cap.hold(), pytest.raises(BackendUnavailableError), cap.hold():
            pytest.fail("a third entered a cap of two")


async def test_tasks_get_back_every_turn_they_give_and_no_more() -> None:
    cap = ConcurrencyCap(2, timeout=0.01)
    for _ in range(3):
        async with cap.hold_async(), cap.hold_async():
            with pytest.raises(BackendUnavailableError):
                async with cap.hold_async():
                    pytest.fail("a third entered a cap of two")


def test_hashes_run_one_per_cpu_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert default_hash_concurrency() == 6
    assert ConcurrencyCap().limit == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one
    assert default_hash_concurrency() == 1


def test_a_turn_handed_over_as_the_wait_runs_out_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    cap = ConcurrencyCap(1, timeout=0.01)
    holder = cap.hold()
    holder.__enter__()

    class HandedOverAsTheWaitRunsOut(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            holder.__exit__(None, None, None)  # the holder leaves: its turn passes to this waiter
            return False  # just as the wait runs out

    monkeypatch.setattr(threading, "Event", HandedOverAsTheWaitRunsOut)
    with cap.hold():  # the turn handed over is taken, not refused
        monkeypatch.undo()
    with cap.hold():  # and given back: no turn was lost
        pass
