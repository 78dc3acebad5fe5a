"""A wall clock the meter tests move by hand, and the meters they run against."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from apikeys._meter import Allowance, KeyLimits, Meter

START = datetime(2030, 1, 1, 12, 0, 15, tzinfo=UTC)
"""Fifteen seconds into a minute (windows align to the Unix epoch), in the future:
Redis keeps counters for as long as the caller's clock says, whatever its own."""


class MovedClock:
    """A wall clock that stands still until a test moves it."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Spender:
    """Spends through a meter's sync or async method, so one test covers both twins."""

    def __init__(self, meter: Meter, *, use_async: bool) -> None:
        self.meter = meter
        self.use_async = use_async

    def __call__(self, meter_id: str, limits: KeyLimits, cost: int = 1) -> Allowance:
        if self.use_async:
            return asyncio.run(self.meter.spend_async(meter_id, limits, cost))
        return self.meter.spend(meter_id, limits, cost)
