"""A worker process spending on a shared Redis meter, for the exactness test
(see :mod:`tests.hammering`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apikeys._meter import KeyLimits
from apikeys._redis_meter import RedisMeter
from tests.hammering import Accepted, count_accepted


def hammer(
    url: str,
    limits: dict[str, KeyLimits],
    windows: list[datetime],
    attempts: int,
    barrier: Any,
    results: Any,
) -> None:
    """Spend ``attempts`` times on every meter id of ``limits`` in each window, all workers
    starting each window together; put ``{(meter id, window): calls accepted}`` on ``results``."""
    now = [windows[0]]
    meter = RedisMeter(url, clock=lambda: now[0])
    accepted: Accepted = {}
    try:
        count_accepted(
            lambda meter_id: meter.spend(meter_id, limits[meter_id]),
            limits, windows, attempts, now, barrier, accepted,
        )  # fmt: skip
    finally:
        meter.close()
        results.put(accepted)
