"""Counting what keys spend against their rate limits and quotas, free of IO, and in memory.

A call that costs ``cost`` units is measured against up to two counters of the key:
its rate limit's current window and its quota's current period (or its one-off
balance). The call is accepted only if both have room for all of it, and then both
are charged; a refused call charges neither. Every store (:class:`MemoryMeter`
here, :class:`~apikeys._redis_meter.RedisMeter` in Redis) does exactly this, and
nothing else:

1. :func:`plan_spend` turns a meter id, the key's :class:`KeyLimits`, the cost and
   the time into a :class:`SpendPlan`: the counters to move, by name, with their
   limits and when they may be forgotten (windows from :mod:`apikeys._keylimits`);
2. the store reads the counters, and charges them all if :meth:`SpendPlan.fits`,
   atomically;
3. :func:`settle` turns the counts into an :class:`Allowance` (what is left of
   each limit and when it resets, as the ``RateLimit`` header fields report it),
   or raises :class:`~apikeys.RateLimitedError` /
   :class:`~apikeys._errors.QuotaExceededError` carrying the allowance the
   refused call left untouched (its ``usage``).

The meter id is chosen by the caller (a key's lineage, so that rotating a key
does not refill its quota); counters are named after it and their window:
``apikeys:rate:{meter_id}:{window start}`` and
``apikeys:quota:{meter_id}:{period start, or "once"}``.

Example:
    >>> from datetime import UTC, datetime
    >>> from apikeys._keylimits import RateLimit
    >>> now = datetime(2030, 1, 1, tzinfo=UTC)
    >>> meter = MemoryMeter(clock=lambda: now)
    >>> limits = KeyLimits(rate_limit=RateLimit(limit=3, window=60))
    >>> meter.spend("lineage-1", limits, cost=2).rate_limit.remaining
    1
    >>> meter.spend("lineage-1", limits, cost=2)
    Traceback (most recent call last):
    ...
    apikeys._errors.RateLimitedError: Rate limit exceeded: 1 of 3 left in this window
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol

from apikeys._errors import InvalidInputError, QuotaExceededError, RateLimitedError
from apikeys._expiry import WallClock, check_clock, utcnow
from apikeys._keylimits import (
    MAX_LIMIT,
    Quota,
    RateLimit,
    Window,
    as_utc,
    quota_window,
    rate_window,
)

DEFAULT_MAX_COUNTERS = 100_000
"""How many counters a :class:`MemoryMeter` holds at most (two per limited key at most)."""


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What one key may spend: a rate limit, a quota, both or neither.

    Attributes:
        rate_limit: Calls (units of cost) per window, or ``None``.
        quota: Credits per period, or for ever, or ``None``.
        quota_anchor: When the quota's first period started (it was set); its
            periods follow each other from there. Required for a quota with a period.
    """

    rate_limit: RateLimit | None = None
    quota: Quota | None = None
    quota_anchor: datetime | None = None

    def __post_init__(self) -> None:
        if self.quota is not None and self.quota.period is not None and self.quota_anchor is None:
            raise InvalidInputError(
                "a quota with a period needs the moment its periods count from (quota_anchor)",
                field="quota_anchor",
            )
        if self.quota_anchor is not None and self.quota_anchor.utcoffset() is None:
            raise InvalidInputError(
                "quota_anchor must be a timezone-aware datetime", field="quota_anchor"
            )

    @property
    def limited(self) -> bool:
        """Whether anything is counted at all."""
        return self.rate_limit is not None or self.quota is not None


NO_LIMITS = KeyLimits()
"""A key that may spend without limit: nothing is counted."""


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter a call moves: a rate-limit window or a quota period (or balance).

    Attributes:
        kind: ``"rate"`` or ``"quota"``.
        name: The counter's name in every store.
        limit: The most it may count.
        window: Its window or period; ``None`` for a one-off quota, which never resets.
    """

    kind: Literal["rate", "quota"]
    name: str
    limit: int
    window: Window | None

    @property
    def expires_at(self) -> int | None:
        """When the counter may be forgotten (Unix seconds): its window's end, or never."""
        return None if self.window is None else self.window.end


@dataclass(frozen=True, slots=True)
class SpendPlan:
    """The counters one call of ``cost`` moves, at ``now``: all of them, or none."""

    meter_id: str
    cost: int
    now: datetime
    counters: tuple[Counter, ...]

    def fits(self, counts: Sequence[int]) -> bool:
        """Whether every counter, now at ``counts``, has room for the whole cost."""
        return all(
            count + self.cost <= counter.limit
            for counter, count in zip(self.counters, counts, strict=True)
        )

    def milliseconds_to_expiry(self, counter: Counter) -> int | None:
        """Milliseconds from :attr:`now` until ``counter`` may be forgotten, rounded up
        (at least one), or ``None`` when it never may."""
        if counter.expires_at is None:
            return None
        return max(1, milliseconds_until(counter.expires_at, self.now))


def milliseconds_until(moment: int, now: datetime) -> int:
    """Whole milliseconds from ``now`` until the Unix second ``moment``, rounded up.

    Counted in integers: float seconds would round a thousandth up to two.
    """
    microseconds = (as_utc(moment) - now) // timedelta(microseconds=1)
    return -(-microseconds // 1000)


@dataclass(frozen=True, slots=True)
class Balance:
    """What is left of one limit after a call.

    Attributes:
        limit: The most the window (or balance) allows.
        remaining: What is left in it.
        window: The current window or period; ``None`` for a one-off quota.
    """

    limit: int
    remaining: int
    window: Window | None

    @property
    def resets_at(self) -> datetime | None:
        """When the next window starts with a full balance; ``None``: never."""
        return None if self.window is None else as_utc(self.window.end)

    def seconds_left(self, now: datetime) -> float | None:
        """Seconds from ``now`` until :attr:`resets_at`; ``None``: never."""
        return None if self.window is None else self.window.seconds_left(now)

    def given_back(self, cost: int) -> Balance:
        """This balance with ``cost`` given back: what it was before a call that was undone."""
        return replace(self, remaining=min(self.limit, self.remaining + cost))


@dataclass(frozen=True, slots=True)
class Allowance:
    """What a key has left of its limits: enough for the ``RateLimit`` header fields.

    After an accepted call, what that call left; on a refused call (the
    ``usage`` of its :class:`~apikeys.RateLimitedError`), what the key still
    had, since a refused call charges nothing.

    Attributes:
        rate_limit: The rate limit's balance in its current window, or ``None`` without one.
        quota: The quota's balance, or ``None`` without one.
        at: When the balances were read, by the clock the manager counts with
            (the seconds to each reset are counted from it); ``None`` when
            unknown. Two allowances with the same balances are equal whenever
            they were read.
    """

    rate_limit: Balance | None = None
    quota: Balance | None = None
    at: datetime | None = field(default=None, compare=False)


UNLIMITED = Allowance()
"""The allowance of a key without limits."""


def check_cost(cost: object) -> int:
    """Return ``cost`` if it is a whole number of units from 1 to 10**12, else raise.

    Raises:
        InvalidInputError: ``field="cost"``.
    """
    if type(cost) is int and 1 <= cost <= MAX_LIMIT:  # the usual case, answered first
        return cost
    if not isinstance(cost, int) or isinstance(cost, bool):
        raise InvalidInputError("cost must be a whole number", field="cost")
    if not 1 <= cost <= MAX_LIMIT:
        raise InvalidInputError(f"cost must be from 1 to {MAX_LIMIT}", field="cost")
    return cost


def check_meter_id(meter_id: object) -> str:
    """Return ``meter_id`` if it is non-empty text, else raise (a programming error)."""
    if not isinstance(meter_id, str) or not meter_id:
        raise InvalidInputError("the meter id must be non-empty text", field="meter_id")
    return meter_id


def plan_spend(meter_id: str, limits: KeyLimits, cost: int, now: datetime) -> SpendPlan:
    """The counters a call of ``cost`` by ``meter_id`` moves at ``now`` (none without limits).

    Raises:
        InvalidInputError: ``cost`` is not from 1 to 10**12 (``field="cost"``).
    """
    cost = check_cost(cost)
    meter_id = check_meter_id(meter_id)
    counters: list[Counter] = []
    if limits.rate_limit is not None:
        window = rate_window(limits.rate_limit, now)
        name = f"apikeys:rate:{meter_id}:{window.start}"
        counters.append(Counter("rate", name, limits.rate_limit.limit, window))
    if limits.quota is not None:
        period = (
            None
            if limits.quota_anchor is None
            else quota_window(limits.quota, limits.quota_anchor, now)
        )
        name = f"apikeys:quota:{meter_id}:{'once' if period is None else period.start}"
        counters.append(Counter("quota", name, limits.quota.limit, period))
    return SpendPlan(meter_id, cost, now, tuple(counters))


def settle(plan: SpendPlan, spent: bool, counts: Sequence[int]) -> Allowance:
    """What is left once the counters of ``plan`` were charged (``spent``, ``counts`` after),
    or the error for a refused call (``counts`` as they stand, nothing charged).

    A spent quota is reported before a rate limit: waiting for the window to end would not help.

    Raises:
        QuotaExceededError: The quota has no room for the cost.
        RateLimitedError: The rate limit's window has no room for the cost.
        Either carries, as its ``usage``, what every limit still has.
    """
    rate_limit = quota = None
    for counter, count in zip(plan.counters, counts, strict=True):
        balance = Balance(counter.limit, max(0, counter.limit - count), counter.window)
        if counter.kind == "rate":
            rate_limit = balance
        else:
            quota = balance
    usage = Allowance(rate_limit, quota, plan.now)
    if not spent:
        refused = [
            (counter, count)
            for counter, count in zip(plan.counters, counts, strict=True)
            if count + plan.cost > counter.limit
        ]
        counter, count = max(refused, key=lambda pair: pair[0].kind == "quota")
        raise _refusal(plan, counter, count, usage)
    return usage


def _refusal(plan: SpendPlan, counter: Counter, count: int, usage: Allowance) -> RateLimitedError:
    left = max(0, counter.limit - count)
    # Rounded up to the millisecond, so that a retry at retry_after lands in the next window.
    retry_after = (
        None
        if counter.window is None
        else max(0, milliseconds_until(counter.window.end, plan.now)) / 1000
    )
    if counter.kind == "quota":
        when = "it never refills" if counter.window is None else "it refills when this period ends"
        return QuotaExceededError(
            f"Quota exceeded: {left} of {counter.limit} left; {when}",
            refills_at=None if counter.window is None else as_utc(counter.window.end),
            retry_after=retry_after,
            usage=usage,
        )
    return RateLimitedError(
        f"Rate limit exceeded: {left} of {counter.limit} left in this window",
        retry_after=retry_after,
        usage=usage,
    )


class Meter(Protocol):
    """What counts calls against keys' limits: :class:`MemoryMeter`, or one shared by a fleet."""

    def spend(self, meter_id: str, limits: KeyLimits, cost: int = 1) -> Allowance:
        """Charge ``cost`` to every limit of ``meter_id``, all or nothing."""
        ...

    async def spend_async(self, meter_id: str, limits: KeyLimits, cost: int = 1) -> Allowance:
        """:meth:`spend`, for async callers."""
        ...

    def close(self) -> None:
        """Drop the connections of sync callers, if any."""
        ...

    async def aclose(self) -> None:
        """Close the connections of the running event loop, if any."""
        ...


class MemoryMeter:
    """Counters in this process's memory: exact for one process, per process in a fleet.

    Holds at most ``max_counters`` counters. When it is full, counters whose
    window has ended are dropped first, then the counter used least recently;
    a dropped counter starts again from zero, so a full meter grows more
    lenient, never stricter. A quota that must never be granted
    twice belongs in a shared, durable store, not here.

    Args:
        clock: The wall clock windows are read from, injectable for tests.
        max_counters: Upper bound on counters held.
    """

    __slots__ = ("_clock", "_counts", "_lock", "_swept_at", "max_counters")

    def __init__(
        self, *, clock: WallClock = utcnow, max_counters: int = DEFAULT_MAX_COUNTERS
    ) -> None:
        if max_counters < 2:
            raise ValueError("max_counters must be >= 2 (a key may have two counters)")
        self._clock = check_clock(clock)
        self.max_counters = max_counters
        # name -> (count, Unix second it may be forgotten at, or None); least recently used first.
        self._counts: OrderedDict[str, tuple[int, int | None]] = OrderedDict()
        self._swept_at: int | None = None  # the clock's second of the last sweep of ended windows
        self._lock = threading.Lock()

    def spend(self, meter_id: str, limits: KeyLimits, cost: int = 1) -> Allowance:
        """Charge ``cost`` to every limit of ``meter_id``, all or nothing.

        Returns:
            What is left of each limit.

        Raises:
            QuotaExceededError: The quota has no room for ``cost``; nothing is charged.
            RateLimitedError: The rate limit's window has no room; nothing is charged.
            InvalidInputError: ``cost`` is not from 1 to 10**12.
        """
        plan = plan_spend(meter_id, limits, cost, self._clock())
        return self.count(plan) if plan.counters else UNLIMITED

    async def spend_async(self, meter_id: str, limits: KeyLimits, cost: int = 1) -> Allowance:
        """:meth:`spend`, for async callers (nothing here waits)."""
        return self.spend(meter_id, limits, cost)

    def close(self) -> None:
        """Nothing to close: the counters live in this process."""

    async def aclose(self) -> None:
        """Nothing to close: the counters live in this process."""

    def count(self, plan: SpendPlan) -> Allowance:
        """Carry out ``plan`` (made at any time, by any clock): charge all its counters or none."""
        moment = plan.now.timestamp()
        with self._lock:
            counts = [self._current(counter.name, moment) for counter in plan.counters]
            spent = plan.fits(counts)
            if spent:
                counts = [count + plan.cost for count in counts]
                for counter, count in zip(plan.counters, counts, strict=True):
                    if counter.name not in self._counts:
                        self._make_room(moment)
                    self._counts[counter.name] = (count, counter.expires_at)
                    self._counts.move_to_end(counter.name)
        return settle(plan, spent, counts)

    def _current(self, name: str, moment: float) -> int:
        entry = self._counts.get(name)
        if entry is None:
            return 0
        count, expires_at = entry
        if expires_at is not None and expires_at <= moment:
            del self._counts[name]
            return 0
        return count

    def _make_room(self, moment: float) -> None:
        if len(self._counts) < self.max_counters:
            return
        # Ended windows go first. They all end on whole seconds, so one sweep
        # per second finds every one: a flood of new counters never makes each
        # call walk the whole table.
        second = math.floor(moment)
        if second != self._swept_at:
            self._swept_at = second
            ended = [
                name
                for name, (_, expires_at) in self._counts.items()
                if expires_at is not None and expires_at <= moment
            ]
            for name in ended:
                del self._counts[name]
        while len(self._counts) >= self.max_counters:
            self._counts.popitem(last=False)  # the counter used least recently

    def __len__(self) -> int:
        return len(self._counts)


__all__ = [
    "DEFAULT_MAX_COUNTERS",
    "NO_LIMITS",
    "UNLIMITED",
    "Allowance",
    "Balance",
    "Counter",
    "KeyLimits",
    "MemoryMeter",
    "Meter",
    "SpendPlan",
    "check_cost",
    "check_meter_id",
    "milliseconds_until",
    "plan_spend",
    "settle",
]
