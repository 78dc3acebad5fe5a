"""Counting calls against rate limits and quotas: the same behaviour in memory and in Redis.

Every test runs on a :class:`~apikeys._meter.MemoryMeter` and on a
:class:`~apikeys._redis_meter.RedisMeter` against a real Redis, through the
sync and the async method. The clock is moved by hand: no test waits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from apikeys._errors import (
    ConfigurationError,
    InvalidInputError,
    QuotaExceededError,
    RateLimitedError,
)
from apikeys._keylimits import Quota, RateLimit, Window
from apikeys._meter import (
    UNLIMITED,
    Allowance,
    Balance,
    KeyLimits,
    MemoryMeter,
    Meter,
    plan_spend,
)
from tests.core.meter_clock import START, MovedClock, Spender

MeterFactory = Callable[[MovedClock], Meter]


@pytest.fixture(params=["memory", "redis"])
def make_meter(request: pytest.FixtureRequest) -> Iterator[MeterFactory]:
    """Builds a meter of each kind on a given clock."""
    if request.param == "memory":
        yield lambda clock: MemoryMeter(clock=clock)
        return
    pytest.importorskip("redis")
    from apikeys._redis_meter import RedisMeter

    server = request.getfixturevalue("redis")
    made: list[RedisMeter] = []

    def build(clock: MovedClock) -> Meter:
        made.append(RedisMeter(server.url, clock=clock))
        return made[-1]

    yield build
    for meter in made:
        meter.close()


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def use_async(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def clock() -> MovedClock:
    return MovedClock()


@pytest.fixture
def spend(make_meter: MeterFactory, clock: MovedClock, use_async: bool) -> Spender:
    return Spender(make_meter(clock), use_async=use_async)


MINUTE = Window(int(START.timestamp()) - 15, int(START.timestamp()) + 45)


def rate(limit: int, window: int = 60) -> KeyLimits:
    return KeyLimits(rate_limit=RateLimit(limit=limit, window=window))


def quota(limit: int, period: int | None = None, anchor: datetime = START) -> KeyLimits:
    return KeyLimits(quota=Quota(limit=limit, period=period), quota_anchor=anchor)


def both(
    rate_limit: int, quota_limit: int, *, window: int = 60, period: int | None = None
) -> KeyLimits:
    return KeyLimits(
        rate_limit=RateLimit(limit=rate_limit, window=window),
        quota=Quota(limit=quota_limit, period=period),
        quota_anchor=START,
    )


def test_a_key_without_limits_counts_nothing(spend: Spender) -> None:
    for _ in range(3):
        assert spend("k", KeyLimits(), 10**12) == UNLIMITED
    if isinstance(spend.meter, MemoryMeter):
        assert len(spend.meter) == 0


def test_a_rate_limit_admits_its_limit_per_window_then_says_when_to_retry(
    spend: Spender, clock: MovedClock
) -> None:
    for remaining in (2, 1, 0):
        allowance = spend("k", rate(3))
        assert allowance == Allowance(rate_limit=Balance(3, remaining, MINUTE))
    assert allowance.rate_limit is not None
    assert allowance.rate_limit.resets_at == datetime(2030, 1, 1, 12, 1, tzinfo=UTC)
    assert allowance.rate_limit.seconds_left(clock()) == 45
    clock.advance(10.2)
    with pytest.raises(RateLimitedError) as refused:
        spend("k", rate(3))
    assert type(refused.value) is RateLimitedError
    assert refused.value.retry_after == pytest.approx(34.8)
    assert refused.value.status_code == 429 and refused.value.code == "rate_limited"
    assert spend("other", rate(3)).rate_limit == Balance(3, 2, MINUTE)  # counted apart


def test_a_refused_call_consumes_nothing(spend: Spender) -> None:
    assert spend("k", rate(5), cost=3).rate_limit == Balance(5, 2, MINUTE)
    for _ in range(4):
        with pytest.raises(RateLimitedError):
            spend("k", rate(5), cost=3)  # more than is left: none of it is taken
    assert spend("k", rate(5), cost=2).rate_limit == Balance(5, 0, MINUTE)


def test_a_spent_quota_charges_nothing_to_the_rate_limit(spend: Spender, clock: MovedClock) -> None:
    limits = both(10, 3, period=30)  # the quota refills every 30 s, within one rate window
    clock.now = START - timedelta(seconds=15)  # the minute's start, and the quota's anchor
    limits = KeyLimits(limits.rate_limit, limits.quota, quota_anchor=clock.now)
    assert spend("k", limits, cost=3).rate_limit == Balance(10, 7, MINUTE)
    for _ in range(5):
        with pytest.raises(QuotaExceededError):
            spend("k", limits)
    clock.advance(30)  # the quota refills; the rate window is the same
    allowance = spend("k", limits)
    assert allowance.rate_limit == Balance(10, 6, MINUTE)  # not 1: refusals took nothing
    assert allowance.quota == Balance(3, 2, Window(MINUTE.start + 30, MINUTE.start + 60))


def test_a_spent_rate_limit_charges_nothing_to_the_quota(spend: Spender, clock: MovedClock) -> None:
    limits = both(2, 10)
    assert spend("k", limits, cost=2).quota == Balance(10, 8, None)
    for _ in range(4):
        with pytest.raises(RateLimitedError) as refused:
            spend("k", limits)
        assert type(refused.value) is RateLimitedError
    clock.advance(45)
    assert spend("k", limits).quota == Balance(10, 7, None)


def test_when_both_are_spent_the_quota_is_reported(spend: Spender) -> None:
    limits = both(2, 2, period=3600)
    spend("k", limits, cost=2)
    with pytest.raises(QuotaExceededError) as refused:
        spend("k", limits)
    assert refused.value.refills_at == START + timedelta(hours=1)
    assert refused.value.retry_after == 3600


def test_a_quota_refills_a_period_after_its_anchor(spend: Spender, clock: MovedClock) -> None:
    anchor = START - timedelta(minutes=20, seconds=7)  # periods start at hh:40:08
    limits = quota(2, period=3600, anchor=anchor)
    assert spend("k", limits, cost=2).quota == Balance(
        2, 0, Window(int(anchor.timestamp()), int(anchor.timestamp()) + 3600)
    )
    clock.now = anchor + timedelta(hours=1) - timedelta(milliseconds=1)
    with pytest.raises(QuotaExceededError) as refused:
        spend("k", limits)
    assert refused.value.code == "quota_exceeded" and refused.value.status_code == 429
    assert refused.value.refills_at == anchor + timedelta(hours=1)
    assert refused.value.retry_after == 0.001
    clock.advance(0.001)
    assert spend("k", limits).quota == Balance(
        2, 1, Window(int(anchor.timestamp()) + 3600, int(anchor.timestamp()) + 7200)
    )


def test_a_rate_limit_refills_exactly_when_its_window_ends(
    spend: Spender, clock: MovedClock
) -> None:
    spend("k", rate(1, window=1))
    clock.now = START + timedelta(milliseconds=999)
    with pytest.raises(RateLimitedError) as refused:
        spend("k", rate(1, window=1))
    assert refused.value.retry_after == 0.001
    clock.advance(0.001)
    assert spend("k", rate(1, window=1)).rate_limit == Balance(
        1, 0, Window(MINUTE.start + 16, MINUTE.start + 17)
    )


def test_a_one_off_quota_never_refills(spend: Spender, clock: MovedClock) -> None:
    assert spend("k", quota(3), cost=3).quota == Balance(3, 0, None)
    for days in (1, 31, 400):
        clock.advance(days * 86400)
        with pytest.raises(QuotaExceededError) as refused:
            spend("k", quota(3))
        assert refused.value.refills_at is None
        assert refused.value.retry_after is None
        assert "never refills" in str(refused.value)


def test_a_cost_above_the_limit_is_always_refused(spend: Spender) -> None:
    with pytest.raises(RateLimitedError):
        spend("k", rate(5), cost=6)
    with pytest.raises(QuotaExceededError):
        spend("k", quota(5), cost=6)
    assert spend("k", both(5, 5), cost=5) == Allowance(Balance(5, 0, MINUTE), Balance(5, 0, None))


def test_a_refusal_carries_what_every_limit_still_has(spend: Spender, clock: MovedClock) -> None:
    limits = both(10, 12, period=3600)
    spend("k", limits, cost=4)
    with pytest.raises(RateLimitedError) as refused:
        spend("k", limits, cost=7)  # the rate limit has 6 left, the quota 8
    assert type(refused.value) is RateLimitedError
    hour = Window(int(START.timestamp()), int(START.timestamp()) + 3600)
    assert refused.value.usage == Allowance(Balance(10, 6, MINUTE), Balance(12, 8, hour))
    assert refused.value.usage.at == clock()  # read by the meter's clock
    with pytest.raises(QuotaExceededError) as spent:
        spend("k", limits, cost=9)  # both are short: the quota is reported
    assert spent.value.usage == Allowance(Balance(10, 6, MINUTE), Balance(12, 8, hour))
    assert spend("k", limits, cost=6) == Allowance(Balance(10, 0, MINUTE), Balance(12, 2, hour))
    # What a refusal carries is about limits, never the key: no secret to show.
    assert repr(spent.value) == f"QuotaExceededError({spent.value.message!r}, key_id=None)"


def test_an_allowance_is_read_by_the_meters_clock(spend: Spender, clock: MovedClock) -> None:
    clock.advance(3.5)
    allowance = spend("k", rate(3))
    assert allowance.at == clock()
    assert allowance.rate_limit is not None
    assert allowance.rate_limit.seconds_left(allowance.at) == 41.5
    assert spend("k", KeyLimits()).at is None  # nothing was read


@pytest.mark.parametrize("cost", [0, -1, True, 1.0, "1", None, 10**12 + 1])
def test_a_cost_outside_one_to_a_trillion_is_invalid(spend: Spender, cost: object) -> None:
    with pytest.raises(InvalidInputError) as refused:
        spend("k", rate(5), cost)  # type: ignore[arg-type]
    assert refused.value.field == "cost"
    with pytest.raises(InvalidInputError):
        spend("k", KeyLimits(), cost)  # type: ignore[arg-type]  # even without limits


def test_the_largest_cost_and_limit_count_exactly(spend: Spender) -> None:
    assert spend("k", quota(10**12), cost=10**12 - 1).quota == Balance(10**12, 1, None)
    assert spend("k", quota(10**12)).quota == Balance(10**12, 0, None)


# --- IO-free parts -----------------------------------------------------------------------


def test_the_plan_names_each_counter_after_the_meter_and_its_window() -> None:
    limits = both(10, 100, period=86400)
    plan = plan_spend("lineage-1", limits, 2, START)
    start = int(START.timestamp())
    assert [counter.name for counter in plan.counters] == [
        f"apikeys:rate:lineage-1:{start - 15}",
        f"apikeys:quota:lineage-1:{start}",
    ]
    assert [counter.expires_at for counter in plan.counters] == [start + 45, start + 86400]
    assert [plan.milliseconds_to_expiry(counter) for counter in plan.counters] == [
        45_000,
        86_400_000,
    ]
    once = plan_spend("lineage-1", quota(5), 1, START).counters[0]
    assert once.name == "apikeys:quota:lineage-1:once"
    assert once.expires_at is None
    assert plan_spend("lineage-1", KeyLimits(), 1, START).counters == ()


def test_key_limits_need_an_aware_anchor_for_a_quota_with_a_period() -> None:
    with pytest.raises(InvalidInputError) as missing:
        KeyLimits(quota=Quota(limit=5, period=60))
    assert missing.value.field == "quota_anchor"
    with pytest.raises(InvalidInputError):
        KeyLimits(quota=Quota(limit=5, period=60), quota_anchor=datetime(2030, 1, 1))
    assert KeyLimits(quota=Quota(limit=5)).limited  # a one-off balance needs none
    assert not KeyLimits().limited


def test_a_meter_id_must_be_text() -> None:
    with pytest.raises(InvalidInputError):
        MemoryMeter().spend("", rate(1))


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        MemoryMeter(clock=lambda: datetime(2030, 1, 1))


def test_threads_sharing_a_memory_meter_get_exactly_the_limit() -> None:
    meter = MemoryMeter(clock=MovedClock())

    def attempts(_thread: int) -> int:
        accepted = 0
        for _ in range(200):
            try:
                meter.spend("k", both(500, 700))
            except RateLimitedError:
                continue
            accepted += 1
        return accepted

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(attempts, range(8))) == 500


def test_both_meters_offer_the_same_methods() -> None:
    pytest.importorskip("redis")
    from apikeys._redis_meter import RedisMeter

    def public(cls: type) -> set[str]:
        return {
            name for name in vars(cls) if not name.startswith("_") and callable(vars(cls)[name])
        }

    assert public(RedisMeter) == {"spend", "spend_async", "close", "aclose"}
    assert public(MemoryMeter) - public(RedisMeter) == {"count"}  # what Redis falls back on


# --- the memory bound --------------------------------------------------------------------


def test_a_full_memory_meter_drops_ended_windows_first_then_the_least_recently_used() -> None:
    clock = MovedClock()
    meter = MemoryMeter(clock=clock, max_counters=3)
    meter.spend("b", rate(1))
    meter.spend("c", rate(1))
    meter.spend("a", rate(1, window=1))  # the most recently used, but its window ends first
    clock.advance(1)
    meter.spend("d", rate(1))
    assert len(meter) == 3
    for spent in ("b", "c", "d"):  # kept: still refused
        with pytest.raises(RateLimitedError):
            meter.spend(spent, rate(1))
    meter.spend("e", rate(1))  # nothing has ended: the least recently used ("b") goes
    assert len(meter) == 3
    meter.spend("b", rate(1))  # forgotten: more lenient, never stricter


def test_a_flood_of_keys_keeps_the_memory_meter_bounded() -> None:
    clock = MovedClock()
    meter = MemoryMeter(clock=clock, max_counters=50)
    for number in range(1000):
        meter.spend(f"k{number}", both(5, 5, period=3600))
        if number % 100 == 0:
            clock.advance(7)
    assert len(meter) == 50


def test_a_memory_meter_needs_room_for_both_counters_of_a_key() -> None:
    with pytest.raises(ValueError, match="max_counters"):
        MemoryMeter(max_counters=1)
