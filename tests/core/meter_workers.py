"""A worker process spending on a shared Redis meter, for the exactness test.

Started with the ``spawn`` method: a fresh interpreter, its own connections,
as a worker of a real deployment. Every worker reads the same fixed clock for
each window, so the windows are the same for all of them whatever the timing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from apikeys._errors import RateLimitedError
from apikeys._meter import KeyLimits
from apikeys._redis_meter import RedisMeter


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
    accepted: dict[tuple[str, int], int] = {}
    try:
        for number, moment in enumerate(windows):
            now[0] = moment + timedelta(seconds=1)
            barrier.wait(timeout=60)
            for _ in range(attempts):
                for meter_id, key_limits in limits.items():
                    try:
                        meter.spend(meter_id, key_limits)
                    except RateLimitedError:
                        continue
                    accepted[meter_id, number] = accepted.get((meter_id, number), 0) + 1
    finally:
        meter.close()
        results.put(accepted)
