"""A worker process validating keys on a shared database and Redis, for the exactness test
(see :mod:`tests.hammering`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from argon2 import PasswordHasher

from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager
from tests.hammering import Accepted, count_accepted

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
    accepted: Accepted = {}
    try:
        count_accepted(
            lambda name: manager.validate_api_key(secrets[name]),
            secrets, windows, attempts, now, barrier, accepted,
        )  # fmt: skip
    finally:
        manager.close()
        results.put(accepted)
