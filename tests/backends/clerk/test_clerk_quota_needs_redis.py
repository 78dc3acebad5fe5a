"""Clerk has no database: a quota is counted in Redis, or not at all. A Clerk manager
without ``redis_url`` refuses quotas with a ConfigurationError rather than let each
process grant the whole quota on its own; rate limits count per process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from apikeys import ConfigurationError, RateLimitedError
from apikeys.testing import FakeClerk
from tests.backends.clerk.twins import Twin
from tests.redis_server import RedisServer

pytestmark = pytest.mark.clerk


def test_creating_a_key_with_a_quota_is_refused_before_anything_is_sent(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    with pytest.raises(ConfigurationError, match="redis_url") as refused:
        twin.create_api_key(user_id, "metered", quota="1000/30d")
    assert refused.value.status_code == 500
    assert fake.count("POST", "/api_keys") == 0


def test_setting_a_quota_is_refused_before_anything_is_sent(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    new = twin.create_api_key(user_id, "plain")
    with pytest.raises(ConfigurationError, match="redis_url"):
        twin.update_api_key_limits(new.id, quota="10")
    assert fake.count("PATCH", "/api_keys/{id}") == 0
    assert twin.get_api_key(new.id).quota is None
    # Removing a quota, or setting a rate limit, needs no Redis.
    assert twin.update_api_key_limits(new.id, rate_limit="5/1m", quota=None).quota is None


def test_a_key_with_a_quota_is_refused_with_a_configuration_error(
    make_twin: Callable[..., Twin], shared_redis: RedisServer, user_id: str
) -> None:
    # No budget: every fake is one Clerk instance, whose budget the session's Redis would share.
    with_redis = make_twin(redis_url=shared_redis.url, verification_budget=None)
    new = with_redis.create_api_key(user_id, "metered", quota="1000/30d")
    assert with_redis.validate_api_key(new.secret).usage.quota.remaining == 999
    without_redis = make_twin()
    with pytest.raises(ConfigurationError, match="redis_url") as refused:
        without_redis.validate_api_key(new.secret)
    assert refused.value.status_code == 500
    assert with_redis.validate_api_key(new.secret).usage.quota.remaining == 998


def test_a_rate_limit_counts_in_the_process_without_redis(twin: Twin, user_id: str) -> None:
    new = twin.create_api_key(user_id, "rated", rate_limit="2/1h")
    assert [twin.validate_api_key(new.secret).usage.rate_limit.remaining for _ in "ab"] == [1, 0]
    with pytest.raises(RateLimitedError):
        twin.validate_api_key(new.secret)
