"""The Redis meter against a real Redis: exact across processes, and what it does while Redis is down.

Also a state machine that drives a memory meter and a Redis meter with the
same random calls, costs, limits and clock moves, and checks both against a
plain model of fixed windows.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from apikeys._errors import BackendUnavailableError, QuotaExceededError, RateLimitedError
from apikeys._keylimits import Quota, RateLimit, quota_window, rate_window
from apikeys._meter import Allowance, KeyLimits, MemoryMeter
from tests.core.meter_clock import START, MovedClock
from tests.redis_server import RedisServer

pytest.importorskip("redis")

import redis as redis_client

from apikeys._redis import COUNTER_TIMEOUT, RETRY_REDIS_AFTER
from apikeys._redis_meter import RedisMeter
from tests.core.meter_workers import hammer
from tests.hammering import hammer_in_processes

RATE = KeyLimits(rate_limit=RateLimit(limit=2, window=60))
QUOTA = KeyLimits(quota=Quota(limit=5, period=3600), quota_anchor=START)
BOTH = KeyLimits(RATE.rate_limit, QUOTA.quota, START)


class Outage:
    """A monotonic clock for the meter's retry waits, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_counters_live_until_their_window_ends_and_a_one_off_balance_for_ever(
    redis: RedisServer,
) -> None:
    meter = RedisMeter(redis.url, clock=MovedClock())
    once = KeyLimits(quota=Quota(limit=5))
    meter.spend("k", BOTH)
    meter.spend("k", once)
    client = redis_client.Redis.from_url(redis.url, decode_responses=True)
    try:
        lifetimes = {name: client.pttl(name) for name in client.keys("apikeys:*")}
    finally:
        client.close()
        meter.close()
    start = int(START.timestamp())
    assert set(lifetimes) == {
        f"apikeys:rate:k:{start - 15}",
        f"apikeys:quota:k:{start}",
        "apikeys:quota:k:once",
    }
    assert 44_000 < lifetimes[f"apikeys:rate:k:{start - 15}"] <= 45_000
    assert 3_599_000 < lifetimes[f"apikeys:quota:k:{start}"] <= 3_600_000
    assert lifetimes["apikeys:quota:k:once"] == -1  # never expires


def test_redis_down_counts_rate_limits_in_the_process_and_refuses_quotas(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    outage = Outage()
    meter = RedisMeter(redis.url, clock=MovedClock(), outage_clock=outage)
    try:
        meter.spend("k", RATE)  # counted in Redis: one of two
        meter.spend("q", QUOTA, cost=4)
        redis.kill()
        with caplog.at_level(logging.WARNING, logger="apikeys"):
            # Counted in the process from zero: each worker admits up to the limit.
            assert meter.spend("k", RATE).rate_limit is not None
            assert meter.spend("k", RATE).rate_limit.remaining == 0  # type: ignore[union-attr]
            with pytest.raises(RateLimitedError):
                meter.spend("k", RATE)
            for limits in (QUOTA, BOTH):  # quotas are money: never counted per process
                with pytest.raises(BackendUnavailableError) as unavailable:
                    meter.spend("q", limits)
                assert unavailable.value.status_code == 503
                assert unavailable.value.retry_after == RETRY_REDIS_AFTER
        assert caplog.text.count("cannot reach Redis") == 1
        assert "refusing keys with a quota" in caplog.text
        redis.start()  # an empty Redis: nothing was persisted
        with pytest.raises(BackendUnavailableError):
            meter.spend("q", QUOTA)  # Redis is left alone for a while
        outage.now += RETRY_REDIS_AFTER
        assert meter.spend("q", QUOTA).quota.remaining == 4  # type: ignore[union-attr]
        assert meter.spend("k", RATE).rate_limit.remaining == 1  # type: ignore[union-attr]
    finally:
        meter.close()


def test_redis_down_in_async_code_counts_rate_limits_in_the_process(redis: RedisServer) -> None:
    outage = Outage()
    meter = RedisMeter(redis.url, clock=MovedClock(), outage_clock=outage)

    async def calls() -> None:
        await meter.spend_async("k", RATE)
        redis.kill()
        await meter.spend_async("k", RATE)
        await meter.spend_async("k", RATE)
        with pytest.raises(RateLimitedError):
            await meter.spend_async("k", RATE)
        with pytest.raises(BackendUnavailableError):
            await meter.spend_async("q", BOTH)
        redis.start()
        outage.now += RETRY_REDIS_AFTER
        allowance = await meter.spend_async("q", BOTH)
        assert allowance.quota is not None and allowance.quota.remaining == 4
        await meter.aclose()

    asyncio.run(calls())
    meter.close()


def test_a_paused_redis_holds_up_one_call_per_retry_not_every_call(redis: RedisServer) -> None:
    meter = RedisMeter(redis.url, clock=MovedClock(), outage_clock=Outage())
    meter.spend("q", QUOTA)  # connected
    redis.pause()
    try:
        began = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            meter.spend("q", QUOTA)  # waits for Redis, up to its timeout
        waited = time.monotonic() - began
        assert waited < 5 * COUNTER_TIMEOUT
        began = time.monotonic()
        for number in range(20):
            with pytest.raises(BackendUnavailableError):
                meter.spend("q", QUOTA)  # Redis is left alone: refused at once
            meter.spend(f"k{number}", RATE)  # counted in the process at once
        assert time.monotonic() - began < COUNTER_TIMEOUT
    finally:
        redis.resume()
        meter.close()


def test_a_key_without_limits_never_asks_redis(redis: RedisServer) -> None:
    meter = RedisMeter(redis.url, clock=MovedClock())
    redis.kill()
    assert meter.spend("k", KeyLimits()) == Allowance()
    meter.close()


@pytest.mark.slow
def test_four_processes_admit_exactly_the_limit_per_window_and_the_quota_over_the_run(
    redis: RedisServer,
) -> None:
    windows, attempts, workers = 3, 40, 4
    limits = {
        "rate": KeyLimits(rate_limit=RateLimit(limit=50, window=60)),
        "quota": KeyLimits(quota=Quota(limit=120, period=86400), quota_anchor=START),
        "both": KeyLimits(RateLimit(limit=50, window=60), Quota(limit=120), START),
    }
    moments = [START + timedelta(minutes=number) for number in range(windows)]
    accepted = hammer_in_processes(
        hammer, (redis.url, limits, moments, attempts), workers, timeout=120
    )
    # 160 attempts per window against each id, from four processes at once.
    assert [accepted.get(("rate", number), 0) for number in range(windows)] == [50, 50, 50]
    assert sum(accepted.get(("quota", number), 0) for number in range(windows)) == 120
    assert [accepted.get(("both", number), 0) for number in range(windows)] == [50, 50, 20]


# --- the same random calls on both meters and on a plain model ---------------------------


@dataclass
class Model:
    """Fixed windows, counted in a dict: what both meters must do."""

    counts: dict[tuple[str, str, int | None], int]

    def spend(self, meter_id: str, limits: KeyLimits, cost: int, clock: MovedClock) -> Any:
        now = clock()
        checks: list[tuple[str, int | None, int | None, int]] = []
        if limits.rate_limit is not None:
            window = rate_window(limits.rate_limit, now)
            checks.append(("rate", window.start, window.end, limits.rate_limit.limit))
        if limits.quota is not None:
            assert limits.quota_anchor is not None
            period = quota_window(limits.quota, limits.quota_anchor, now)
            start = None if period is None else period.start
            end = None if period is None else period.end
            checks.append(("quota", start, end, limits.quota.limit))
        used = [self.counts.get((meter_id, kind, start), 0) for kind, start, _, _ in checks]
        refused = [
            (kind, end)
            for (kind, _, end, limit), count in zip(checks, used, strict=True)
            if count + cost > limit
        ]
        if refused:
            kind, end = max(refused, key=lambda pair: pair[0] == "quota")
            wait = None if end is None else end - now.timestamp()
            return ("refused", kind, None if wait is None else round(wait, 3))
        outcome: list[Any] = ["spent"]
        for (kind, start, end, limit), count in zip(checks, used, strict=True):
            self.counts[meter_id, kind, start] = count + cost
            outcome.append((kind, limit - count - cost, end))
        return tuple(outcome)


def observed(meter: Any, meter_id: str, limits: KeyLimits, cost: int) -> Any:
    """What a meter did, in the model's terms."""
    try:
        allowance: Allowance = meter.spend(meter_id, limits, cost)
    except QuotaExceededError as exc:
        return ("refused", "quota", exc.retry_after)
    except RateLimitedError as exc:
        return ("refused", "rate", exc.retry_after)
    outcome: list[Any] = ["spent"]
    for kind, balance in (("rate", allowance.rate_limit), ("quota", allowance.quota)):
        if balance is not None:
            end = None if balance.window is None else balance.window.end
            outcome.append((kind, balance.remaining, end))
    return tuple(outcome)


def test_memory_and_redis_meters_agree_with_a_model_of_fixed_windows(redis: RedisServer) -> None:
    class Agreement(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = MovedClock()
            self.memory = MemoryMeter(clock=self.clock, max_counters=1000)
            # Two workers of one fleet: their counts are one.
            self.workers = [RedisMeter(redis.url, clock=self.clock) for _ in range(2)]
            self.model = Model({})
            self.prefix = uuid.uuid4().hex  # a fresh meter id per example: Redis is shared
            self.limits: list[KeyLimits] = []

        @initialize(
            choices=st.lists(
                st.tuples(
                    st.one_of(
                        st.none(),
                        st.builds(
                            RateLimit,
                            limit=st.integers(1, 6),
                            window=st.sampled_from([1, 5, 60]),
                        ),
                    ),
                    st.one_of(
                        st.none(),
                        st.builds(
                            Quota,
                            limit=st.integers(1, 12),
                            period=st.sampled_from([None, 7, 3600]),
                        ),
                    ),
                    st.integers(0, 4000),
                ),
                min_size=1,
                max_size=3,
            )
        )
        def limits_of_the_keys(self, choices: list[tuple[Any, Any, int]]) -> None:
            self.limits = [
                KeyLimits(rate_limit, quota, START - timedelta(seconds=back))
                for rate_limit, quota, back in choices
            ]

        @rule(key=st.integers(0, 2), cost=st.integers(1, 4), worker=st.integers(0, 1))
        def spend(self, key: int, cost: int, worker: int) -> None:
            key %= len(self.limits)
            meter_id, limits = f"{self.prefix}-{key}", self.limits[key]
            expected = self.model.spend(meter_id, limits, cost, self.clock)
            assert observed(self.memory, meter_id, limits, cost) == expected
            assert observed(self.workers[worker], meter_id, limits, cost) == expected

        @rule(seconds=st.sampled_from([0.001, 0.5, 1, 3, 7, 59, 61, 3600]))
        def time_passes(self, seconds: float) -> None:
            self.clock.advance(seconds)

        def teardown(self) -> None:
            for meter in self.workers:
                meter.close()

    run_state_machine_as_test(
        Agreement, settings=settings(max_examples=40, stateful_step_count=30, deadline=None)
    )
