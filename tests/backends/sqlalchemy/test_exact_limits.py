"""Four worker processes sharing one database and one Redis, hammering keys through
``validate_api_key``: exactly the limit is accepted in each window, exactly the quota
over the run, never one more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager
from tests.backends.sqlalchemy.validation_workers import CHEAP_HASHER, hammer
from tests.hammering import hammer_in_processes
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.sqlalchemy, pytest.mark.slow]

START = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


def test_four_processes_accept_exactly_the_limit_per_window_and_the_quota_over_the_run(
    database_url: str, redis: RedisServer
) -> None:
    windows, attempts, workers = 3, 30, 4
    with SQLAlchemyKeyManager(
        database_url, clock=lambda: START, password_hasher=CHEAP_HASHER
    ) as manager:
        secrets = {
            "rate": manager.create_api_key("user_1", "rate", rate_limit="50/1m").secret,
            "quota": manager.create_api_key("user_1", "quota", quota="100/1d").secret,
            "both": manager.create_api_key("user_1", "both", rate_limit="50/1m", quota="70").secret,
        }
    moments = [START + timedelta(minutes=number) for number in range(windows)]
    accepted = hammer_in_processes(
        hammer, (database_url, redis.url, secrets, moments, attempts), workers, timeout=300
    )
    # 120 attempts per window against each key, from four processes at once.
    assert [accepted.get(("rate", number), 0) for number in range(windows)] == [50, 50, 50]
    assert sum(accepted.get(("quota", number), 0) for number in range(windows)) == 100
    assert [accepted.get(("both", number), 0) for number in range(windows)] == [50, 20, 0]
