"""A worker process validating keys on a shared database and Redis, for the exactness test.

Started with the ``spawn`` method: a fresh interpreter, its own connections and
manager, as a worker of a real deployment. Every worker reads the same fixed clock
for each window, so the windows are the same for all of them whatever the timing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher

from apikeys._errors import RateLimitedError
from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager

CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
"""Hashes cheap enough that the test measures counting, not argon2."""


def hammer(
    database_url: str,
    redis_url: str,
    secrets: dict[str, str],
    windows: list[datetime],
    attempts: int,
    barrier: Any,
    results: Any,
) -> None:
    """Validate every key of ``secrets`` (name -> secret) ``attempts`` times in each window,
    all workers starting each window together; put ``{(name, window): calls accepted}``
    on ``results``."""
    now = [windows[0]]
    manager = SQLAlchemyKeyManager(
        database_url, redis_url=redis_url, clock=lambda: now[0], password_hasher=CHEAP_HASHER
    )
    accepted: dict[tuple[str, int], int] = {}
    try:
        for number, moment in enumerate(windows):
            now[0] = moment + timedelta(seconds=1)
            barrier.wait(timeout=60)
            for _ in range(attempts):
                for name, secret in secrets.items():
                    try:
                        manager.validate_api_key(secret)
                    except RateLimitedError:
                        continue
                    accepted[name, number] = accepted.get((name, number), 0) + 1
    finally:
        manager.close()
        results.put(accepted)
