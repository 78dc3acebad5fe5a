"""The abuse-control building blocks: the failure limiter and the concurrency cap."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apikeys import (
    BackendUnavailableError,
    ExpiredKeyError,
    InvalidKeyError,
    RateLimitedError,
    RevokedKeyError,
)
from apikeys._ratelimit import ConcurrencyCap, FailureLimiter, default_hash_concurrency
from tests.reliability.helpers import FakeClock

# --- FailureLimiter ----------------------------------------------------------------


def test_allows_max_failures_then_refuses_with_retry_after() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(3, 60.0, clock=clock)
    for expected in (1, 2, 3):
        limiter.check("k")
        assert limiter.record_failure("k") == expected
    with pytest.raises(RateLimitedError) as caught:
        limiter.check("k")
    assert caught.value.status_code == 429
    assert caught.value.retry_after == pytest.approx(20.0)
    assert caught.value.key_id is None
    limiter.check("other")  # keys are independent


def test_a_token_grows_back_every_window_over_max() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(4, 60.0, clock=clock)
    for _ in range(4):
        limiter.record_failure("k")
    clock.advance(14.9)
    assert limiter.retry_after("k") == pytest.approx(0.1)
    clock.advance(0.1)
    limiter.check("k")  # one token back
    limiter.record_failure("k")
    with pytest.raises(RateLimitedError):
        limiter.check("k")
    clock.advance(60.0)
    assert limiter.retry_after("k") is None
    for _ in range(4):  # a full bucket again
        limiter.check("k")
        limiter.record_failure("k")


def test_lockout_never_exceeds_one_window() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(2, 10.0, clock=clock)
    for _ in range(50):  # racing attempts that all passed the check
        limiter.record_failure("k")
    retry_after = limiter.retry_after("k")
    assert retry_after is not None
    assert retry_after <= 10.0
    clock.advance(10.0)
    limiter.check("k")


def test_zero_disables() -> None:
    limiter = FailureLimiter(0, 60.0)
    assert not limiter.enabled
    for _ in range(1000):
        limiter.check("k")
        assert limiter.record_failure("k") == 0
    assert len(limiter) == 0


def test_reset_forgets_a_key() -> None:
    limiter = FailureLimiter(1, 60.0)
    limiter.record_failure("k")
    with pytest.raises(RateLimitedError):
        limiter.check("k")
    limiter.reset("k")
    limiter.check("k")


@pytest.mark.parametrize(
    ("max_failures", "window", "max_tracked"),
    [(-1, 60.0, 10), (1, 0.0, 10), (1, -1.0, 10), (1, float("inf"), 10), (1, 1.0, 0)],
)
def test_bad_parameters_are_refused(max_failures: int, window: float, max_tracked: int) -> None:
    with pytest.raises(ValueError, match="max_failures"):
        FailureLimiter(max_failures, window, max_tracked=max_tracked)


def test_memory_is_bounded_and_the_least_recent_key_goes_first() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(1, 60.0, max_tracked=100, clock=clock)
    for index in range(10_000):
        limiter.record_failure(f"id{index}")
    assert len(limiter) == 100
    assert limiter.retry_after("id9999") is not None
    assert limiter.retry_after("id0") is None  # forgotten: more lenient, never stricter


def test_refilled_keys_are_dropped_before_active_ones() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(1, 10.0, max_tracked=3, clock=clock)
    limiter.record_failure("old")
    clock.advance(11.0)  # "old" has refilled
    limiter.record_failure("a")
    limiter.record_failure("b")
    limiter.record_failure("c")  # needs room: "old" goes, not "a"
    assert limiter.retry_after("a") is not None
    assert len(limiter) == 3


@settings(max_examples=200, deadline=None)
@given(
    max_failures=st.integers(1, 20),
    steps=st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 5)), max_size=200),
)
def test_failures_never_outrun_the_bucket(
    max_failures: int, steps: list[tuple[str, float]]
) -> None:
    """Whatever the arrival pattern, a key checked before each attempt gets at
    most ``max_failures`` accepted in a burst, plus one per refill interval:
    in any span of ``t`` seconds, at most ``max_failures + t / interval``."""
    clock = FakeClock()
    window = 10.0
    interval = window / max_failures
    limiter = FailureLimiter(max_failures, window, clock=clock)
    accepted: dict[str, list[float]] = {}
    for key, pause in steps:
        clock.advance(pause)
        wait = limiter.retry_after(key)
        if wait is not None:
            assert 0 < wait <= interval + 1e-6
            with pytest.raises(RateLimitedError):
                limiter.check(key)
            continue
        limiter.check(key)
        limiter.record_failure(key)
        times = accepted.setdefault(key, [])
        times.append(clock.now)
        for count, start in enumerate(reversed(times), start=1):
            assert count <= max_failures + (clock.now - start) / interval + 1e-6


def test_limiter_is_thread_safe() -> None:
    limiter = FailureLimiter(1000, 3600.0)
    barrier = threading.Barrier(8)

    def fail_many() -> None:
        barrier.wait()
        for _ in range(125):
            limiter.record_failure("k")

    threads = [threading.Thread(target=fail_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with pytest.raises(RateLimitedError):
        limiter.check("k")  # exactly 1000 failures took every token
    assert limiter.record_failure("k") == 1000


def test_attempt_guards_a_validation_per_client() -> None:
    limiter = FailureLimiter(2, 60.0)
    for error in (ExpiredKeyError(), RevokedKeyError(), BackendUnavailableError()):
        with pytest.raises(type(error)), limiter.attempt("10.0.0.1"):
            raise error
    assert len(limiter) == 0  # none of those is the client's guessing
    with limiter.attempt("10.0.0.1"):
        pass  # a success takes nothing
    for _ in range(2):
        with pytest.raises(InvalidKeyError), limiter.attempt("10.0.0.1"):
            raise InvalidKeyError()
    ran = []
    with pytest.raises(RateLimitedError), limiter.attempt("10.0.0.1"):
        ran.append(True)
    assert ran == []  # refused before the validation ran
    with limiter.attempt("10.0.0.2"):  # other clients are unaffected
        ran.append(True)
    assert ran == [True]


async def test_attempt_works_around_an_await() -> None:
    limiter = FailureLimiter(1, 60.0)

    async def validate() -> None:
        await asyncio.sleep(0)
        raise InvalidKeyError()

    with pytest.raises(InvalidKeyError), limiter.attempt("client"):
        await validate()
    with pytest.raises(RateLimitedError), limiter.attempt("client"):
        await validate()


# --- ConcurrencyCap ----------------------------------------------------------------


def test_default_cap_is_one_per_cpu() -> None:
    assert ConcurrencyCap().limit == default_hash_concurrency() >= 1


@pytest.mark.parametrize(("limit", "timeout"), [(0, 1.0), (1, 0.0), (2, -1.0)])
def test_cap_refuses_bad_parameters(limit: int, timeout: float) -> None:
    with pytest.raises(ValueError, match="limit"):
        ConcurrencyCap(limit, timeout=timeout)


def test_threads_never_exceed_the_cap() -> None:
    cap = ConcurrencyCap(2, timeout=5.0)
    inside = peak = 0
    lock = threading.Lock()

    # The two threads inside meet before either leaves: a cap that let a third in
    # would have it inside with them.
    pair = threading.Barrier(2, timeout=5)

    def work() -> None:
        nonlocal inside, peak
        with cap.hold():
            with lock:
                inside += 1
                peak = max(peak, inside)
            pair.wait()
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2


def test_a_thread_waiting_too_long_is_refused_not_let_through() -> None:
    cap = ConcurrencyCap(1, timeout=0.05)
    release = threading.Event()

    held = threading.Event()

    def hold() -> None:
        with cap.hold():
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as caught, cap.hold():
        pytest.fail("entered a full cap")
    assert time.monotonic() - started < 1.0
    assert caught.value.status_code == 503
    assert caught.value.retry_after == 1
    assert caught.value.message == "too many API key checks in progress"
    release.set()
    holder.join()
    with cap.hold():  # the turn was given back
        pass


async def test_tasks_never_exceed_the_cap_and_the_loop_keeps_running() -> None:
    cap = ConcurrencyCap(2, timeout=5.0)
    inside = peak = ticks = 0
    done = asyncio.Event()

    async def work() -> None:
        nonlocal inside, peak
        async with cap.hold_async():
            inside += 1
            peak = max(peak, inside)
            for _ in range(5):  # the other tasks run meanwhile and try to enter
                await asyncio.sleep(0)
            inside -= 1

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    await asyncio.gather(*(work() for _ in range(10)))
    done.set()
    await tick_task
    assert peak == 2
    assert ticks > 10  # waiting tasks never blocked the loop


async def test_a_task_waiting_too_long_is_refused() -> None:
    cap = ConcurrencyCap(1, timeout=0.05)
    async with cap.hold_async():
        with pytest.raises(BackendUnavailableError) as caught:
            async with cap.hold_async():
                pytest.fail("entered a full cap")
    assert caught.value.message == "too many API key checks in progress"
    assert (caught.value.status_code, caught.value.retry_after) == (503, 1)
    async with cap.hold_async():  # nothing leaked
        pass


def test_each_event_loop_gets_its_own_turns() -> None:
    cap = ConcurrencyCap(1, timeout=0.5)

    async def use() -> None:
        async with cap.hold_async():
            await asyncio.sleep(0)

    for _ in range(3):  # a semaphore bound to a closed loop would fail here
        asyncio.run(use())


# --- first come, first served: a request queued behind a flood keeps its place ----------


def _queued(cap: ConcurrencyCap) -> int:
    """How many threads wait for a turn (the cap's own queue: there is no public count)."""
    slots: Any = cap._thread_slots
    # A plain threading.Semaphore keeps its waiters in its condition: read either, so
    # that the test shows what a semaphore does rather than failing on a name.
    waiters = getattr(slots, "_waiters", None)
    return len(waiters if waiters is not None else slots._cond._waiters)


def test_turns_go_to_threads_in_arrival_order_never_to_a_newcomer() -> None:
    cap = ConcurrencyCap(1, timeout=5.0)
    order: list[str] = []

    def take(name: str) -> None:
        with cap.hold():
            order.append(name)

    waiters = []
    with cap.hold():
        for index, name in enumerate("abcde"):
            waiter = threading.Thread(target=take, args=(name,))
            waiter.start()
            waiters.append(waiter)
            while _queued(cap) < index + 1:  # each one queued before the next arrives
                time.sleep(0.001)
    # The turn just released is handed to "a": this thread, arriving now, queues last
    # (a plain semaphore lets it barge in and take the turn again).
    take("newcomer")
    for waiter in waiters:
        waiter.join(timeout=10)
    assert order == ["a", "b", "c", "d", "e", "newcomer"]


def test_a_thread_that_gave_up_waiting_leaves_the_queue() -> None:
    cap = ConcurrencyCap(1, timeout=0.05)
    with cap.hold(), pytest.raises(BackendUnavailableError), cap.hold():
        pytest.fail("entered a full cap")
    assert _queued(cap) == 0
    with cap.hold():  # the turn went back, not to the waiter that left
        pass


async def test_turns_go_to_tasks_in_arrival_order_never_to_a_newcomer() -> None:
    cap = ConcurrencyCap(1, timeout=5.0)
    order: list[str] = []

    async def take(name: str) -> None:
        async with cap.hold_async():
            order.append(name)
            await asyncio.sleep(0)

    async with cap.hold_async():
        waiters = []
        for name in "abcde":
            waiters.append(asyncio.create_task(take(name)))
            await asyncio.sleep(0)  # the task runs up to its wait, and queues
    await take("newcomer")
    await asyncio.gather(*waiters)
    assert order == ["a", "b", "c", "d", "e", "newcomer"]


async def test_a_cancelled_waiting_task_leaves_the_queue_and_leaks_no_turn() -> None:
    cap = ConcurrencyCap(1, timeout=5.0)
    order: list[str] = []

    async def take(name: str) -> None:
        async with cap.hold_async():
            order.append(name)

    async with cap.hold_async():
        first = asyncio.create_task(take("cancelled"))
        await asyncio.sleep(0)
        second = asyncio.create_task(take("next"))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
    await asyncio.wait_for(second, timeout=5)
    assert order == ["next"]
    for _ in range(2):  # one turn, free again each time
        async with cap.hold_async():
            pass
