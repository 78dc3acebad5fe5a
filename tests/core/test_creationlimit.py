"""The per-owner limit on key creations: burst, refill, bounds, and races."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apikeys import RateLimitedError
from apikeys._creationlimit import CreationLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _taken(limiter: CreationLimiter, owner: str) -> bool:
    try:
        limiter.take(owner)
    except RateLimitedError:
        return False
    return True


def test_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    limiter = CreationLimiter(4, 60.0, clock=clock)
    assert [_taken(limiter, "u") for _ in range(6)] == [True] * 4 + [False] * 2
    with pytest.raises(RateLimitedError) as refused:
        limiter.take("u")
    assert refused.value.retry_after == 15.0
    assert refused.value.key_id is None
    assert "Too many API keys" in refused.value.message
    assert _taken(limiter, "someone else")
    clock.now = 14.9
    assert not _taken(limiter, "u")
    clock.now = 15.0
    assert _taken(limiter, "u")
    assert not _taken(limiter, "u")
    clock.now = 15.0 + 60.0
    assert [_taken(limiter, "u") for _ in range(5)] == [True] * 4 + [False]


def test_zero_turns_it_off() -> None:
    limiter = CreationLimiter(0, 60.0)
    assert all(_taken(limiter, "u") for _ in range(1000))


def test_the_clock_can_be_replaced_after_construction() -> None:
    limiter = CreationLimiter(1, 60.0)
    clock = Clock()
    limiter.clock = clock
    assert _taken(limiter, "u")
    assert not _taken(limiter, "u")
    clock.now = 60.0
    assert _taken(limiter, "u")


def test_concurrent_creations_cannot_slip_past_the_check() -> None:
    limiter = CreationLimiter(10, 3600.0)
    barrier = threading.Barrier(40)
    results: list[bool] = []

    def create() -> None:
        barrier.wait()
        results.append(_taken(limiter, "u"))

    threads = [threading.Thread(target=create) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 10


@given(
    max_creations=st.integers(1, 20),
    window=st.floats(1.0, 3600.0),
    steps=st.lists(st.floats(0.0, 100.0), max_size=200),
)
def test_never_more_than_the_burst_plus_the_refill(
    max_creations: int, window: float, steps: list[float]
) -> None:
    clock = Clock()
    limiter = CreationLimiter(max_creations, window, clock=clock)
    outcomes = []
    for step in steps:
        clock.now += step
        outcomes.append(_taken(limiter, "u"))
    assert sum(outcomes) <= max_creations * (1 + clock.now / window) + 1e-9
    assert all(outcomes[:max_creations])  # a fresh owner always gets the whole burst


@pytest.mark.parametrize(("burst", "window"), [(3, 10.0), (9, 1.0), (11, 7.0), (8, 1.9)])
def test_the_whole_burst_whatever_the_float_rounding(burst: int, window: float) -> None:
    # burst * (window / burst) can round above window: no token may be lost to it.
    limiter = CreationLimiter(burst, window, clock=Clock())
    assert [_taken(limiter, "u") for _ in range(burst + 1)] == [True] * burst + [False]
