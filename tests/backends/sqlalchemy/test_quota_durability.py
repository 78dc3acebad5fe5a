"""On the SQLAlchemy backend the database holds the quota: Redis, which counts the rate
limits of a fleet, may be lost or restarted, and the manager itself restarted, without
one spent credit being granted again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

import apikeys
from apikeys import QuotaExceededError, RateLimitedError
from apikeys._meter import MemoryMeter
from apikeys._redis_meter import RedisMeter
from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager, api_keys_table
from tests.redis_server import RedisServer

pytestmark = pytest.mark.sqlalchemy

NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


def _manager(database_url: str, redis: RedisServer) -> SQLAlchemyKeyManager:
    return SQLAlchemyKeyManager(database_url, redis_url=redis.url, clock=lambda: NOW)


def _stored_counter(database_url: str, meter_id: str) -> set[tuple[int, int | None]]:
    engine = sa.create_engine(database_url.replace("+asyncpg", ""))
    table = api_keys_table
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(table.c.quota_used, table.c.quota_period_start).where(
                table.c.meter_id == meter_id
            )
        )
        counters = {(row.quota_used, row.quota_period_start) for row in rows}
    engine.dispose()
    return counters


def test_no_loss_or_restart_of_redis_or_the_manager_grants_spent_credits(
    database_url: str, redis: RedisServer
) -> None:
    manager = _manager(database_url, redis)
    new = manager.create_api_key("user_1", "metered", rate_limit="100/1m", quota="5/30d")
    manager.validate_api_key(new.secret, cost=2)
    # Redis restarted: it starts from zero, the quota does not.
    redis.kill()
    redis.start()
    manager.validate_api_key(new.secret, cost=2)
    # Redis lost: rate limits count in the process, the quota still in the database.
    redis.kill()
    usage = manager.validate_api_key(new.secret).usage
    assert usage is not None and usage.quota is not None
    assert usage.quota.remaining == 0
    with pytest.raises(QuotaExceededError):
        manager.validate_api_key(new.secret)
    manager.close()
    redis.start()
    # A new manager (a restarted process) reads what was spent.
    restarted = _manager(database_url, redis)
    with pytest.raises(QuotaExceededError):
        restarted.validate_api_key(new.secret)
    restarted.close()
    assert _stored_counter(database_url, new.id) == {(5, int(NOW.timestamp()))}


def test_a_rotation_keeps_both_rows_of_the_meter_equal(
    database_url: str, redis: RedisServer
) -> None:
    manager = _manager(database_url, redis)
    old = manager.create_api_key("user_1", "rotated", quota="10/30d")
    manager.validate_api_key(old.secret, cost=3)
    new = manager.rotate_api_key(old.id, grace=3600)
    manager.validate_api_key(new.secret, cost=2)
    manager.validate_api_key(old.secret, cost=1)
    manager.close()
    assert _stored_counter(database_url, old.id) == {(6, int(NOW.timestamp()))}


def test_a_call_the_rate_limit_refuses_gives_its_quota_back(
    database_url: str, redis: RedisServer
) -> None:
    manager = _manager(database_url, redis)
    new = manager.create_api_key("user_1", "both", rate_limit="5/1h", quota="10")
    manager.validate_api_key(new.secret, cost=4)
    with pytest.raises(RateLimitedError):
        manager.validate_api_key(new.secret, cost=4)
    manager.close()
    assert _stored_counter(database_url, new.id) == {(4, None)}


def test_a_key_without_limits_is_served_the_cached_validation_itself(tmp_path: Path) -> None:
    with SQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'keys.db'}", cache_ttl=300) as manager:
        free = manager.create_api_key("user_1", "free")
        limited = manager.create_api_key("user_1", "limited", rate_limit="9/1h")
        assert manager.validate_api_key(free.secret) is manager.validate_api_key(free.secret)
        first = manager.validate_api_key(limited.secret)
        second = manager.validate_api_key(limited.secret)
        assert first is not second
        # The cached validation, shared by every call, never carries one call's usage.
        cached = manager.cache.lookup(limited.secret)
        assert cached is not None and cached.usage is None
        assert first.usage is not None and first.usage.rate_limit is not None
        assert first.usage.rate_limit.remaining == 8


def test_the_meter_is_chosen_by_configuration(
    tmp_path: Path, redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    alone = apikeys.create_key_manager(url)
    assert isinstance(alone, SQLAlchemyKeyManager)
    assert isinstance(alone.meter, MemoryMeter)
    alone.close()
    monkeypatch.setenv("APIKEYS_REDIS_URL", redis.url)
    shared = apikeys.create_key_manager(url)
    assert isinstance(shared, SQLAlchemyKeyManager)
    assert isinstance(shared.meter, RedisMeter)
    shared.close()
